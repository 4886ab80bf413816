package foundation

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestHubSurvivesConnectionFloodToFdLimit: connections that never finish
// TLS, and TLS handshakes without a client certificate that close at once,
// from several source addresses, until the hub process runs out of file
// descriptors. Before the fix an EMFILE from Accept ended the gateway and,
// with it, the whole hub including the console API. Now the hub keeps
// running, the console answers, and an agent enrols and connects.
func TestHubSurvivesConnectionFloodToFdLimit(t *testing.T) {
	hub := bins.StartHub(t)
	const fdLimit = 192
	lim := unix.Rlimit{Cur: fdLimit, Max: fdLimit}
	if err := unix.Prlimit(hub.Proc.PID(), unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatalf("prlimit hub: %v", err)
	}

	// 8 source addresses x 64 (the per-address admission default) is more
	// than the hub's descriptors.
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	for src := 2; src <= 9; src++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(src))}, Timeout: 5 * time.Second}
			for i := 0; i < 80; i++ {
				c, err := d.Dial("tcp", hub.AgentAddr)
				if err != nil {
					continue
				}
				if i%4 == 3 {
					// A cert-less TLS handshake that goes nowhere.
					tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
					_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
					_ = tc.Handshake()
					_ = tc.Close()
					continue
				}
				mu.Lock()
				conns = append(conns, c) // half-open: held, never speaks
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("flood holds %d connections to a hub limited to %d descriptors", len(conns), fdLimit)

	// The flood ran the hub out of descriptors (else this test proves nothing).
	eventually(t, "the hub to hit its descriptor limit", time.Minute, func() (bool, string) {
		b, _ := os.ReadFile(hub.Proc.Log)
		return strings.Contains(string(b), "too many open files"), "no EMFILE in the hub log yet"
	})
	if err := syscall.Kill(hub.Proc.PID(), 0); err != nil {
		t.Fatalf("hub process gone during the flood: %v", err)
	}

	for _, c := range conns {
		_ = c.Close()
	}
	// Still one hub: its console answers and an agent enrols and connects.
	eventually(t, "console API after the flood", time.Minute, func() (bool, string) {
		out, errOut, code := run(t, hub.Env, "tether", "version")
		return code == 0 && strings.Contains(out, "Hub:") && !strings.Contains(out, "unreachable"), out + errOut
	})
	start(t, "edge-after-flood", "tether-agent", "run", "--data-dir", t.TempDir(), "--hub", hub.AgentAddr,
		"--no-cluster", "--max-backoff", "2s", "--token", hub.Token(t, "edge-after-flood"))
	eventually(t, "agent connected after the flood", time.Minute, func() (bool, string) {
		c := clusters(t, hub.Env)["edge-after-flood"]
		return c.State == "Connected", fmt.Sprintf("%+v", c)
	})
}
