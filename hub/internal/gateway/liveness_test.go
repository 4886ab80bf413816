package gateway_test

import (
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/gateway"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// TestSilentAgentDisconnected checks the hub's liveness check: an agent
// that stops sending heartbeats while its TCP connection stays open (and
// its yamux still answers pings) is disconnected after HeartbeatTimeout,
// and one that keeps sending them stays. The hub's end of the tunnel
// sends no keepalive pings of its own.
func TestSilentAgentDisconnected(t *testing.T) {
	const timeout = 500 * time.Millisecond
	h := newHub(t, func(c *gateway.Config) {
		c.Heartbeat = 50 * time.Millisecond
		c.HeartbeatTimeout = timeout
		c.SetupTimeout = 200 * time.Millisecond
	})
	live, silent := mustEnroll(t, h, "live"), mustEnroll(t, h, "silent")
	liveSess, liveCC := h.dial(t, live)
	liveStream, _, err := hello(t, liveCC, "live")
	if err != nil {
		t.Fatalf("hello live: %v", err)
	}
	silentSess, silentCC := h.dial(t, silent)
	if _, _, err := hello(t, silentCC, "silent"); err != nil {
		t.Fatalf("hello silent: %v", err)
	}
	beat := &fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Heartbeat{Heartbeat: &fleetv1.Heartbeat{}}}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(10 * time.Second)
wait:
	for {
		select {
		case <-silentSess.Done():
			break wait
		case <-giveUp:
			t.Fatal("the hub kept the session of an agent that sent nothing")
		case <-tick.C:
			if err := liveStream.Send(beat); err != nil {
				t.Fatalf("live heartbeat: %v", err)
			}
		}
	}
	// Keep beating for a few timeouts more: the live agent stays.
	for end := time.After(4 * timeout); ; {
		select {
		case <-tick.C:
			if err := liveStream.Send(beat); err != nil {
				t.Fatalf("live heartbeat: %v", err)
			}
			continue
		case <-end:
		}
		break
	}
	select {
	case <-liveSess.Done():
		t.Fatal("the hub closed the session of an agent that kept sending heartbeats")
	default:
	}
	waitFor(t, "only the live agent listed", func() bool {
		s := h.gw.Sessions()
		return len(s) == 1 && s[0].Cluster == "live"
	})
}
