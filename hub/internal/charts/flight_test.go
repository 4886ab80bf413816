package charts

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

func TestFlightSharesOneCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g flight
		var calls atomic.Int32
		release := make(chan struct{})
		fn := func(context.Context) (Chart, error) {
			calls.Add(1)
			<-release
			return Chart{Digest: "d"}, nil
		}
		var wg sync.WaitGroup
		results := make([]Chart, 5)
		for i := range results {
			wg.Go(func() { results[i], _ = g.do(t.Context(), "k", fn) })
		}
		synctest.Wait() // all five are blocked: one in fn, four waiting for it
		if n := calls.Load(); n != 1 {
			t.Fatalf("fn ran %d times while blocked, want 1", n)
		}
		close(release)
		wg.Wait()
		for i, r := range results {
			if r.Digest != "d" {
				t.Errorf("caller %d got %+v", i, r)
			}
		}
		// A new call after completion runs fn again.
		if _, err := g.do(t.Context(), "k", fn); err != nil || calls.Load() != 2 {
			t.Errorf("later call: %v, calls %d", err, calls.Load())
		}
	})
}

func TestFlightLeaderCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g flight
		leaderCtx, cancelLeader := context.WithCancel(t.Context())
		started := make(chan struct{})
		var calls atomic.Int32
		fn := func(ctx context.Context) (Chart, error) {
			if calls.Add(1) == 1 {
				close(started)
				<-ctx.Done()
				return Chart{}, ctx.Err()
			}
			return Chart{Digest: "ok"}, nil
		}
		var leaderErr error
		var wg sync.WaitGroup
		wg.Go(func() { _, leaderErr = g.do(leaderCtx, "k", fn) })
		<-started
		var follower Chart
		var followerErr error
		wg.Go(func() { follower, followerErr = g.do(t.Context(), "k", fn) })
		synctest.Wait()
		cancelLeader()
		wg.Wait()
		if !errors.Is(leaderErr, context.Canceled) {
			t.Errorf("leader err = %v", leaderErr)
		}
		if followerErr != nil || follower.Digest != "ok" {
			t.Errorf("follower = %+v, %v; want it to run fn itself", follower, followerErr)
		}
	})
}

func TestFlightPanicReleasesWaiters(t *testing.T) {
	var g flight
	func() {
		defer func() { _ = recover() }()
		_, _ = g.do(context.Background(), "k", func(context.Context) (Chart, error) { panic("boom") })
	}()
	// The key is free again.
	c, err := g.do(context.Background(), "k", func(context.Context) (Chart, error) { return Chart{Digest: "x"}, nil })
	if err != nil || c.Digest != "x" {
		t.Errorf("after panic: %+v, %v", c, err)
	}
}
