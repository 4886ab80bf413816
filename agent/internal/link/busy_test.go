package link

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/protocol/backoff"
	"github.com/tetherfleet/tether/protocol/tunnel"
)

// TestAgentBacksOffFromBusyHub: a hub over its admission limits answers a
// new connection with a busy line instead of TLS. The agent recognises it
// and waits at least MinBackoff × 2^4 (jittered) before the next attempt,
// not the shortest backoff.
func TestAgentBacksOffFromBusyHub(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		// As the gateway does: the line, then close, reading nothing.
		_, _ = c.Write([]byte(tunnel.BusyPrefix + ": 64 connections open from 127.0.0.1; retry later\n"))
		c.Close()
	})
	l, err := New(Config{Cache: nopCache{}, Tunnel: tunnel.DefaultConfig(), DialTimeout: 10 * time.Second, MinBackoff: time.Second, MaxBackoff: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tc := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: "127.0.0.1", InsecureSkipVerify: true}
	_, err = l.dialHub(context.Background(), ln.Addr().String(), tc, nil)
	if !errors.Is(err, ErrHubBusy) {
		t.Fatalf("dial a busy hub: %v; want ErrHubBusy", err)
	}
	bo := backoff.New(time.Second, time.Minute)
	bo.Rand = func() float64 { return 0 } // the shortest jitter
	state, wait := retryAfter(err, bo)
	if state != StateOffline || wait < 8*time.Second {
		t.Fatalf("after a busy refusal: state %s, wait %s; want offline and at least 8s", state, wait)
	}
}

// nopCache is a Cache with nothing in it.
type nopCache struct{}

func (nopCache) Identity() (cache.Identity, error)   { return cache.Identity{}, cache.ErrNoIdentity }
func (nopCache) SaveIdentity(cache.Identity) error   { return nil }
func (nopCache) SaveLinkState(cache.LinkState) error { return nil }
