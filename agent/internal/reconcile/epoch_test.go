package reconcile

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/tetherfleet/tether/agent/internal/engine"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// listEngine reports installed releases and records uninstalls; applies
// fail (charts are offline in these tests anyway).
type listEngine struct {
	Engine
	mu          sync.Mutex
	installed   []engine.ReleaseInfo
	uninstalled []string
}

func (e *listEngine) List(context.Context) ([]engine.ReleaseInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.installed), nil
}

func (e *listEngine) Uninstall(_ context.Context, name, namespace string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.uninstalled = append(e.uninstalled, namespace+"/"+name)
	return nil
}

func (e *listEngine) Apply(context.Context, engine.Release) (engine.Result, error) {
	return engine.Result{}, errors.New("no cluster in this test")
}

// TestFullStateFromRestoredHubReplacesNewerRevision: the agent holds
// revision 100 with {A} from hub epoch E; the hub, restored to a backup at
// revision 50 with {B}, sends its full state. It must replace the held
// state (not be ignored as older), survive a restart, and A must be
// removed from the cluster.
func TestFullStateFromRestoredHubReplacesNewerRevision(t *testing.T) {
	for _, tc := range []struct {
		name, heldEpoch, epoch string
		rev                    uint64
	}{
		{"restored backup, same epoch", "E", "E", 50},
		{"new hub, other epoch, same revision", "E", "F", 100},
		{"hub older than epochs", "", "", 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "agent.db")
			r, c := newReconciler(t, path)
			ctx := context.Background()
			if err := r.Desired(ctx, &fleetv1.DesiredState{Revision: 100, Epoch: tc.heldEpoch, Full: true, Services: []*fleetv1.Service{svc("apps", "a")}}); err != nil {
				t.Fatal(err)
			}
			restored := &fleetv1.DesiredState{Revision: tc.rev, Epoch: tc.epoch, Full: true, Services: []*fleetv1.Service{svc("apps", "b")}}
			if err := r.Desired(ctx, restored); err != nil {
				t.Fatalf("full state from the restored hub: %v", err)
			}
			if got := names(r.desired); !equal(got, []string{"apps/b"}) || r.Revision() != tc.rev || r.Epoch() != tc.epoch {
				t.Fatalf("held %v at %d/%q; want exactly [apps/b] at %d/%q", got, r.Revision(), r.Epoch(), tc.rev, tc.epoch)
			}
			// A later delta of the restored history applies over {B}.
			if err := r.Desired(ctx, &fleetv1.DesiredState{Revision: tc.rev + 1, Epoch: tc.epoch, Services: []*fleetv1.Service{svc("apps", "c")}}); err != nil {
				t.Fatal(err)
			}
			if got := names(r.desired); !equal(got, []string{"apps/b", "apps/c"}) {
				t.Fatalf("after delta: %v; want [apps/b apps/c]", got)
			}
			c.Close()

			// After a restart, A is removed from the cluster.
			r2, _ := newReconciler(t, path)
			eng := &listEngine{installed: []engine.ReleaseInfo{{Name: "a", Namespace: "apps"}, {Name: "b", Namespace: "apps"}}}
			r2.cfg.Engine = eng
			if r2.Revision() != tc.rev+1 || r2.Epoch() != tc.epoch {
				t.Fatalf("after reopen: %d/%q", r2.Revision(), r2.Epoch())
			}
			r2.Pass(ctx)
			eng.mu.Lock()
			defer eng.mu.Unlock()
			if !slices.Equal(eng.uninstalled, []string{"apps/a"}) {
				t.Fatalf("uninstalled %v; want exactly [apps/a]", eng.uninstalled)
			}
		})
	}
}

// TestDeltaOfAnotherEpochIsRefused: a delta cannot apply over another
// history's state; it is refused and nothing changes.
func TestDeltaOfAnotherEpochIsRefused(t *testing.T) {
	r, _ := newReconciler(t, filepath.Join(t.TempDir(), "agent.db"))
	ctx := context.Background()
	if err := r.Desired(ctx, &fleetv1.DesiredState{Revision: 10, Epoch: "E", Full: true, Services: []*fleetv1.Service{svc("apps", "a")}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Desired(ctx, &fleetv1.DesiredState{Revision: 11, Epoch: "F", Services: []*fleetv1.Service{svc("apps", "b")}}); err == nil {
		t.Fatal("delta of another epoch accepted")
	}
	if got := names(r.desired); !equal(got, []string{"apps/a"}) || r.Revision() != 10 || r.Epoch() != "E" {
		t.Fatalf("held %v at %d/%q after a refused delta", got, r.Revision(), r.Epoch())
	}
}
