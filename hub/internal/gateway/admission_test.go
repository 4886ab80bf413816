package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/gateway"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	"github.com/tetherfleet/tether/protocol/tunnel"
)

// dialFrom opens a TCP connection to the hub from a given loopback address.
func dialFrom(t *testing.T, h *testHub, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refusedBusy reports whether the hub answered c with its busy line and
// closed it, before any TLS.
func refusedBusy(t *testing.T, c net.Conn) (string, bool) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", false
	}
	return line, strings.HasPrefix(line, gateway.BusyPrefix)
}

// TestFailedEnrolmentDoesNotKeepSession: an Enroll call used to mark the
// session active before the token was checked, so a connection that failed
// to enrol was never reaped. A session without a certificate now always
// ends at SetupTimeout.
func TestFailedEnrolmentDoesNotKeepSession(t *testing.T) {
	h := newHub(t, func(c *gateway.Config) { c.SetupTimeout = 300 * time.Millisecond })
	sess, cc := h.dial(t, h.anonTLS())
	_, err := fleetv1.NewEnrollmentClient(cc).Enroll(context.Background(), &fleetv1.EnrollRequest{Token: "not-a-token", CsrDer: []byte{1}})
	wantCode(t, err, 7 /* PermissionDenied */, "not valid")
	select {
	case <-sess.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("hub kept the session of a failed enrolment")
	}
}

// TestConnectionFloodIsRefusedBeforeTLS: there was no limit on connections,
// overall or per source address, so a flood of half-open or failed-enrol
// connections took every file descriptor. Connections over a limit now get
// a busy line and are closed before TLS, and other agents are served.
func TestConnectionFloodIsRefusedBeforeTLS(t *testing.T) {
	h := newHub(t, func(c *gateway.Config) {
		// 21: the enrolment below keeps its (cert-less) session for
		// SetupTimeout.
		c.MaxConns, c.MaxConnsPerAddr = 21, 8
		c.ConnRatePerAddr, c.ConnBurstPerAddr = 1, 1000
	})
	good := mustEnroll(t, h, "edge-1")

	// Half-open connections from one address: 8 are admitted (counted
	// once a 9th is refused), the 9th gets the busy line.
	var halfOpen []net.Conn
	for range 8 {
		halfOpen = append(halfOpen, dialFrom(t, h, "127.0.0.2"))
	}
	line, ok := refusedBusy(t, dialFrom(t, h, "127.0.0.2"))
	if !ok || !strings.Contains(line, "per address") {
		t.Fatalf("9th half-open connection from one address: read %q; want a %q line naming the per-address limit", line, gateway.BusyPrefix)
	}

	// Failed-enrol connections from other addresses fill the global limit
	// (1 + 8 + 12 = 21).
	var wg sync.WaitGroup
	for i := range 12 {
		ip := fmt.Sprintf("127.0.1.%d", i+1)
		raw := dialFrom(t, h, ip)
		wg.Go(func() {
			sess, err := tunnel.Dial(context.Background(), tls.Client(raw, h.anonTLS()), tunnel.DefaultConfig(), nil)
			if err != nil {
				t.Errorf("tunnel from %s: %v", ip, err)
				return
			}
			t.Cleanup(func() { sess.Close() })
			cc, _ := sess.ClientConn()
			_, err = fleetv1.NewEnrollmentClient(cc).Enroll(context.Background(), &fleetv1.EnrollRequest{Token: "bad", CsrDer: []byte{1}})
			if err == nil {
				t.Errorf("enrol with a bad token succeeded")
			}
		})
	}
	wg.Wait()
	line, ok = refusedBusy(t, dialFrom(t, h, "127.0.2.1"))
	if !ok || !strings.Contains(line, "hub's limit") {
		t.Fatalf("connection over the global limit: read %q; want the busy line naming the hub's limit", line)
	}

	// The half-open flood goes away; its slots come back and an enrolled
	// agent connects.
	for _, c := range halfOpen {
		c.Close()
	}
	waitFor(t, "a free slot", func() bool {
		raw, err := net.Dial("tcp", h.addr)
		if err != nil {
			return false
		}
		conn := tls.Client(raw, good)
		defer conn.Close()
		return conn.Handshake() == nil
	})
	_, cc := h.dial(t, good)
	if _, _, err := hello(t, cc, "edge-1"); err != nil {
		t.Fatalf("enrolled agent after the flood: %v", err)
	}
}

// TestConnectionRatePerAddressLimited: the token bucket refuses new
// connections from one address beyond its burst until it refills (the
// hub's clock is the test clock, so nothing refills here).
func TestConnectionRatePerAddressLimited(t *testing.T) {
	h := newHub(t, func(c *gateway.Config) { c.ConnRatePerAddr, c.ConnBurstPerAddr = 1, 3 })
	for range 3 {
		c := dialFrom(t, h, "127.0.0.3")
		c.Close()
	}
	line, ok := refusedBusy(t, dialFrom(t, h, "127.0.0.3"))
	if !ok || !strings.Contains(line, "new connections from 127.0.0.3") {
		t.Fatalf("4th connection in a burst of 3: read %q; want the rate refusal", line)
	}
	// Another address is not affected.
	if err := tls.Client(dialFrom(t, h, "127.0.0.4"), h.anonTLS()).Handshake(); err != nil {
		t.Fatalf("a connection from another address: %v", err)
	}
	h.clock.Add(2 * time.Second)
	c := dialFrom(t, h, "127.0.0.3")
	conn := tls.Client(c, h.anonTLS())
	if err := conn.Handshake(); err != nil {
		t.Fatalf("after the bucket refilled: %v", err)
	}
}

// flakyListener holds back the next connection it accepts while it
// returns EMFILE n times, as Accept does when the process is out of file
// descriptors. Only Serve's goroutine calls Accept.
type flakyListener struct {
	net.Listener
	mu      sync.Mutex
	n       int
	pending net.Conn
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.pending == nil {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.pending = c
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n > 0 {
		l.n--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	c := l.pending
	l.pending = nil
	return c, nil
}

// TestAcceptEMFILEDoesNotEndServe: an EMFILE from Accept ended Serve, and
// through server.Run the whole hub. It is retried with backoff now.
func TestAcceptEMFILEDoesNotEndServe(t *testing.T) {
	var fl *flakyListener
	h := newHubWith(t, func(ln net.Listener) net.Listener {
		fl = &flakyListener{Listener: ln}
		return fl
	})
	tc := mustEnroll(t, h, "edge-1")
	fl.mu.Lock()
	fl.n = 5
	fl.mu.Unlock()
	// newHub's cleanup fails the test if Serve returned an error.
	_, cc := h.dial(t, tc)
	if _, _, err := hello(t, cc, "edge-1"); err != nil {
		t.Fatalf("agent after EMFILE: %v", err)
	}
	fl.mu.Lock()
	left := fl.n
	fl.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d EMFILE errors not returned yet", left)
	}
}
