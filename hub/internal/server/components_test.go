package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// blocker runs until ctx is done and records that it was stopped.
func blocker(stopped chan<- string, name string) component {
	return component{name, func(ctx context.Context) error {
		<-ctx.Done()
		stopped <- name
		return nil
	}}
}

func failer(name string, err error) component {
	return component{name, func(context.Context) error { return err }}
}

func finisher(name string) component {
	return component{name, func(context.Context) error { return nil }}
}

// runWithDeadline runs comps and fails the test if runComponents does not
// return (a deadlock).
func runWithDeadline(t *testing.T, ctx context.Context, comps []component) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- runComponents(ctx, slog.New(slog.DiscardHandler), comps) }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("runComponents did not return: deadlock")
		return nil
	}
}

// TestRunComponentsFirstFailureStopsTheRest: one component fails; the
// blocking ones are cancelled and waited for, the one that finished with
// nil stopped nothing, and the error names the failed component.
func TestRunComponentsFirstFailureStopsTheRest(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	stopped := make(chan string, 3)
	boom := errors.New("listener gone")
	err := runWithDeadline(t, context.Background(), []component{
		blocker(stopped, "a"), finisher("done early"), blocker(stopped, "b"), failer("broken", boom), blocker(stopped, "c"),
	})
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "broken: ") {
		t.Fatalf("runComponents = %v, want the failure named after its component", err)
	}
	if len(stopped) != 3 {
		t.Fatalf("%d of 3 blocking components had returned when runComponents did", len(stopped))
	}
}

// TestRunComponentsManyFailuresDoNotDeadlock: more components than the old
// four-slot error channel, all failing at once, and more blocked: every
// one is waited for and exactly one error is returned.
func TestRunComponentsManyFailuresDoNotDeadlock(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	stopped := make(chan string, 8)
	var comps []component
	for i := range 8 {
		comps = append(comps, failer(fmt.Sprintf("f%d", i), fmt.Errorf("failure %d", i)))
		comps = append(comps, blocker(stopped, fmt.Sprintf("b%d", i)))
	}
	err := runWithDeadline(t, context.Background(), comps)
	if err == nil || !strings.HasPrefix(err.Error(), "f") {
		t.Fatalf("runComponents = %v, want one component's failure", err)
	}
	if len(stopped) != 8 {
		t.Fatalf("%d of 8 blocking components had returned", len(stopped))
	}
}

// TestRunComponentsStopOnCancel: a component that finishes with nil stops
// nothing; cancelling ctx then stops every component and returns nil.
func TestRunComponentsStopOnCancel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	stopped := make(chan string, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	finished := make(chan struct{})
	stillRunning := make(chan bool, 1)
	comps := []component{
		blocker(stopped, "a"),
		{"finisher", func(context.Context) error { close(finished); return nil }},
		blocker(stopped, "b"),
		{"watcher", func(ctx context.Context) error {
			<-finished
			stillRunning <- ctx.Err() == nil
			cancel() // the operator stops the hub
			<-ctx.Done()
			return nil
		}},
	}
	if err := runWithDeadline(t, ctx, comps); err != nil {
		t.Fatalf("runComponents after cancel = %v, want nil", err)
	}
	if !<-stillRunning {
		t.Fatal("a component returning nil cancelled the others")
	}
	if len(stopped) != 2 {
		t.Fatalf("%d of 2 blocking components had returned", len(stopped))
	}
}

// TestRunComponentsAllFinish: components that all return nil end the run
// with nil, without ctx being cancelled.
func TestRunComponentsAllFinish(t *testing.T) {
	if err := runWithDeadline(t, context.Background(), []component{finisher("a"), finisher("b")}); err != nil {
		t.Fatalf("runComponents = %v, want nil", err)
	}
}
