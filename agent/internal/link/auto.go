package link

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/protocol/backoff"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	"github.com/tetherfleet/tether/protocol/jointoken"
)

// busyBackoffSteps is where a busy refusal puts the backoff at least:
// MinBackoff × 2^4 (8 s by default), jittered, up to MaxBackoff.
const busyBackoffSteps = 4

// Run enrols if needed, then keeps the agent connected until ctx is done.
// It returns an error only when it cannot go on: enrolment refused, or no
// identity and no token. A cancelled ctx returns nil.
func (l *Link) Run(ctx context.Context) error {
	if err := l.loadIdentity(); errors.Is(err, cache.ErrNoIdentity) {
		if l.cfg.Token == "" || len(l.cfg.Hubs) == 0 {
			return ErrNotEnrolled
		}
		if err := l.enroll(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	} else if err != nil {
		return err
	} else if l.cfg.Token != "" {
		if err := l.reenroll(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	bo := backoff.New(l.cfg.MinBackoff, l.cfg.MaxBackoff)
	for {
		hub := l.nextHub()
		l.setState(StateConnecting, hub, nil)
		err := l.connect(ctx, hub, bo)
		if ctx.Err() != nil {
			l.setState(StateOffline, "", errors.New("agent stopped"))
			return nil
		}
		state, wait := retryAfter(err, bo)
		l.mu.Lock()
		l.st.NextAttempt = l.cfg.Now().Add(wait)
		l.mu.Unlock()
		l.setState(state, hub, err)
		l.log.Warn("hub link down; will retry", "hub", hub, "err", err, "retry_in", wait.Round(time.Millisecond))
		if !backoff.Sleep(ctx, wait) {
			l.setState(StateOffline, "", errors.New("agent stopped"))
			return nil
		}
	}
}

// retryAfter is the link state and wait after a failed connection.
func retryAfter(err error, bo *backoff.Backoff) (string, time.Duration) {
	state := StateOffline
	switch {
	case status.Code(err) == codes.PermissionDenied, errors.Is(err, ErrCertExpired):
		state = StateRefused
		bo.ToCap() // retrying fast will not help
	case errors.Is(err, ErrHubBusy):
		// The hub is up but shedding load: do not come back at once.
		bo.Floor(busyBackoffSteps)
	}
	return state, bo.Next()
}

func (l *Link) nextHub() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	hubs := l.hubs()
	h := hubs[l.hubIndex%len(hubs)]
	l.hubIndex++
	return h
}

func (l *Link) hubs() []string {
	if len(l.cfg.Hubs) > 0 {
		return l.cfg.Hubs
	}
	return l.id.HubAddrs
}

// enroll redeems the join token for an identity, retrying while the hub is
// unreachable; a refusal ends it.
func (l *Link) enroll(ctx context.Context) error {
	tok, err := jointoken.Parse(l.cfg.Token)
	if err != nil {
		return fmt.Errorf("enroll: --token: %w", err)
	}
	// One key for every attempt: if an answer is lost, the hub gives the
	// same key the same certificate again instead of a spent token.
	keyPEM, csr, err := newKey()
	if err != nil {
		return err
	}
	bo := backoff.New(l.cfg.MinBackoff, l.cfg.MaxBackoff)
	for {
		hub := l.nextHub()
		l.setState(StateEnrolling, hub, nil)
		err := l.enrollOnce(ctx, hub, tok, keyPEM, csr)
		if err == nil {
			return nil
		}
		if permanent(err) {
			l.setState(StateRefused, hub, err)
			return fmt.Errorf("enroll with hub %s: %w", hub, err)
		}
		_, wait := retryAfter(err, bo)
		l.setState(StateOffline, hub, err)
		l.log.Warn("enrolment failed; will retry", "hub", hub, "err", err, "retry_in", wait.Round(time.Millisecond))
		if !backoff.Sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// reenroll redeems --token although an identity exists, when the token is
// not the one the identity came from, or the certificate expired. The
// stored identity is replaced only once the new one is saved. With a
// still valid identity one attempt is made and a refusal keeps it; with an
// expired one, enrolment retries like a first one.
func (l *Link) reenroll(ctx context.Context) error {
	tok, err := jointoken.Parse(l.cfg.Token)
	if err != nil {
		return fmt.Errorf("enroll: --token: %w", err)
	}
	l.mu.Lock()
	cur := l.id
	l.mu.Unlock()
	expired := l.certExpired() != nil
	if !expired && cur.TokenID == tok.ID {
		l.log.Info("already enrolled with this token; ignoring --token", "cluster", cur.Cluster)
		return nil
	}
	if len(l.cfg.Hubs) == 0 {
		l.cfg.Hubs = cur.HubAddrs
	}
	if expired {
		l.log.Warn("certificate expired; re-enrolling with --token", "cluster", cur.Cluster)
		return l.enroll(ctx)
	}
	keyPEM, csr, err := newKey()
	if err != nil {
		return err
	}
	hub := l.nextHub()
	if err := l.enrollOnce(ctx, hub, tok, keyPEM, csr); err != nil {
		l.log.Warn("re-enrolment with --token failed; keeping the current identity", "cluster", cur.Cluster, "hub", hub, "err", err)
		return nil
	}
	return nil
}

func permanent(err error) bool {
	if errors.Is(err, ErrClockSkew) {
		return false // fix the clock; the next attempt may succeed
	}
	if errors.Is(err, ErrPinMismatch) {
		return true
	}
	switch status.Code(err) {
	case codes.PermissionDenied, codes.InvalidArgument, codes.Unauthenticated:
		return true
	}
	return false
}

// renewals is a session's renewal timer: at the start of the session and
// then every interval it renews the certificate once it is due (maybeRenew,
// in direct.go). A failure is logged and retried at the next tick; it
// never ends the session, since the certificate still works until it
// expires.
func (l *Link) renewals(ctx context.Context, client fleetv1.FleetClient, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := l.maybeRenew(ctx, client); err != nil && ctx.Err() == nil {
			l.log.Warn("certificate renewal failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
