package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/tetherfleet/tether/protocol/tunnel"
)

// Admission defaults; see Config.
const (
	DefaultMaxConns         = 20000
	DefaultMaxConnsPerAddr  = 64
	DefaultConnRatePerAddr  = 10.0
	DefaultConnBurstPerAddr = 50
)

// BusyPrefix starts the line a refused connection gets before it is
// closed, in place of the TLS ServerHello (see tunnel.BusyPrefix).
const BusyPrefix = tunnel.BusyPrefix

// admission limits connections before their TLS handshake: at most
// MaxConns at once, at most MaxConnsPerAddr from one source IP, and new
// connections per source IP through a token bucket of ConnRatePerAddr per
// second with ConnBurstPerAddr tokens. The checks cost no handshake, so a
// flood is refused cheaply.
type admission struct {
	max, maxPerAddr int
	rate            float64
	burst           float64
	now             func() time.Time

	mu    sync.Mutex
	total int
	addrs map[string]*addrState
	swept time.Time
}

type addrState struct {
	conns  int
	tokens float64
	at     time.Time // when tokens was computed
}

func newAdmission(cfg Config) *admission {
	return &admission{
		max: cfg.MaxConns, maxPerAddr: cfg.MaxConnsPerAddr,
		rate: cfg.ConnRatePerAddr, burst: float64(cfg.ConnBurstPerAddr),
		now: cfg.Now, addrs: map[string]*addrState{},
	}
}

// admit takes a slot for a connection from addr; release gives it back.
// A refusal says which limit was hit.
func (a *admission) admit(addr net.Addr) (release func(), err error) {
	ip := addrIP(addr)
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sweep(now)
	if a.total >= a.max {
		return nil, fmt.Errorf("%d connections open, the hub's limit (--max-agent-conns)", a.total)
	}
	st := a.addrs[ip]
	if st == nil {
		st = &addrState{tokens: a.burst, at: now}
		a.addrs[ip] = st
	}
	st.refill(now, a.rate, a.burst)
	if st.conns >= a.maxPerAddr {
		return nil, fmt.Errorf("%d connections open from %s, the limit per address (--max-agent-conns-per-addr)", st.conns, ip)
	}
	if st.tokens < 1 {
		return nil, fmt.Errorf("new connections from %s above %.3g/s (--agent-conn-rate, --agent-conn-burst)", ip, a.rate)
	}
	st.tokens--
	st.conns++
	a.total++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			st.conns--
			a.total--
			a.mu.Unlock()
		})
	}, nil
}

func (s *addrState) refill(now time.Time, rate, burst float64) {
	if d := now.Sub(s.at); d > 0 {
		s.tokens = min(burst, s.tokens+d.Seconds()*rate)
		s.at = now
	}
}

// sweep forgets, at most once a second, addresses with no connection whose
// bucket is full again: remembering them changes nothing.
func (a *admission) sweep(now time.Time) {
	if now.Sub(a.swept) < time.Second {
		return
	}
	a.swept = now
	for ip, st := range a.addrs {
		if st.conns == 0 {
			st.refill(now, a.rate, a.burst)
			if st.tokens >= a.burst {
				delete(a.addrs, ip)
			}
		}
	}
}

func addrIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// refuse tells a connection the hub is busy and closes it, without
// reading from it or starting TLS.
func refuse(conn net.Conn, why error) {
	_ = conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = conn.Write([]byte(BusyPrefix + ": " + why.Error() + "; retry later\n"))
	conn.Close()
}

// refusalLog keeps refusals from flooding the log: one warning per
// interval with the count, the rest at debug.
type refusalLog struct {
	mu      sync.Mutex
	last    time.Time
	dropped int
}

func (r *refusalLog) note(log *slog.Logger, now time.Time, remote string, err error) {
	r.mu.Lock()
	if now.Sub(r.last) < 10*time.Second {
		r.dropped++
		r.mu.Unlock()
		log.Debug("agent connection refused", "remote", remote, "err", err)
		return
	}
	n := r.dropped
	r.last, r.dropped = now, 0
	r.mu.Unlock()
	log.Warn("agent connection refused", "remote", remote, "err", err, "refused_since_last_warning", n)
}

// temporaryAcceptError reports Accept errors that pass: out of file
// descriptors or buffers, an aborted connection, a timeout. Serve retries
// them after a capped backoff instead of giving up.
func temporaryAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ECONNRESET,
			syscall.ENOBUFS, syscall.ENOMEM, syscall.EAGAIN, syscall.EINTR, syscall.EPROTO, syscall.EPERM:
			return true
		}
	}
	return errors.Is(err, os.ErrDeadlineExceeded)
}
