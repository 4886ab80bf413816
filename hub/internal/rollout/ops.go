package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/store"
)

// Status returns the rollout of MultiClusterService namespace/name, with
// per-stage counts filled in.
func (c *Controller) Status(ctx context.Context, namespace, name string) (*Record, error) {
	var rec *Record
	err := c.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		var err error
		rec, _, err = getRecord(tx, namespace, name)
		return err
	})
	if err != nil {
		return nil, err
	}
	rec.fillCounts()
	return rec, nil
}

func getRecord(tx store.Tx, namespace, name string) (*Record, uint64, error) {
	so, err := tx.Get(KindRollout, namespace, name)
	if errors.Is(err, store.ErrNotFound) && namespace == ClusterDeploymentsNamespace && name == ClusterDeploymentsName {
		return nil, 0, fmt.Errorf("hub-wide rollout of ClusterDeployments: %w (the hub runs without --cluster-deployment-rollout: ClusterDeployment changes apply at once)", ErrNotFound)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, fmt.Errorf("rollout of MultiClusterService %s/%s: %w (it has no spec.rollout, or the rollout controller has not seen it yet)", namespace, name, ErrNotFound)
	}
	if err != nil {
		return nil, 0, err
	}
	var rec Record
	if err := json.Unmarshal(so.Value, &rec); err != nil {
		return nil, 0, fmt.Errorf("rollout %s/%s: %w", namespace, name, err)
	}
	return &rec, so.ResourceVersion, nil
}

// update changes a stored record in one transaction; the controller's
// next Reconcile (the write wakes it) acts on the change.
func (c *Controller) update(ctx context.Context, namespace, name string, fn func(*Record) error) (*Record, error) {
	var rec *Record
	err := c.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		r, rv, err := getRecord(tx, namespace, name)
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		rec = r
		_, err = tx.Update(store.Object{Kind: KindRollout, Namespace: namespace, Name: name, Value: b, ResourceVersion: rv})
		return err
	})
	if err != nil {
		return nil, err
	}
	rec.fillCounts()
	return rec, nil
}

// Pause stops admitting clusters; those in progress go on.
func (c *Controller) Pause(ctx context.Context, namespace, name string) (*Record, error) {
	return c.update(ctx, namespace, name, func(r *Record) error {
		r.Paused = true
		if r.Phase == PhaseProgressing {
			r.Phase = PhasePaused
		}
		return nil
	})
}

// Resume undoes Pause, and goes on with a halted rollout with a fresh
// failure budget (the failures so far are forgiven). The hub-wide
// ClusterDeployment rollout also goes on after a rollback: its clusters
// still Pending (and changes that arrived meanwhile) roll out; the
// rolled-back ones stay where they are until their ClusterDeployment
// changes again.
func (c *Controller) Resume(ctx context.Context, namespace, name string) (*Record, error) {
	return c.update(ctx, namespace, name, func(r *Record) error {
		r.Paused = false
		rolledBack := r.Phase == PhaseRolledBack && r.Scope == ScopeClusterDeployments
		if r.Phase == PhaseHalted || r.Phase == PhasePaused || rolledBack {
			r.Forgiven = 0
			for _, s := range r.Clusters {
				if r.inWave(s) && (s.State == Failed || s.State == TimedOut) {
					r.Forgiven++
				}
			}
			r.Phase, r.Reason = PhaseProgressing, ""
		}
		return nil
	})
}

// Approve lets a Manual stage of the current revision start.
func (c *Controller) Approve(ctx context.Context, namespace, name, stage string) (*Record, error) {
	return c.update(ctx, namespace, name, func(r *Record) error {
		names := make([]string, 0, len(r.Stages))
		for _, s := range r.Stages {
			names = append(names, s.Name)
		}
		if !slices.Contains(names, stage) {
			return fmt.Errorf("approve rollout %s/%s: stage %q: %w (stages: %s)", namespace, name, stage, ErrUnknownStage, strings.Join(names, ", "))
		}
		if !slices.Contains(r.Approved, stage) {
			r.Approved = append(r.Approved, stage)
		}
		return nil
	})
}

// History returns the revisions kept, oldest first; for the hub-wide
// ClusterDeployment rollout, every ClusterDeployment's (by name, each
// oldest first, with ClusterDeployment set).
func (c *Controller) History(ctx context.Context, namespace, name string) ([]RevisionRecord, error) {
	rec, err := c.Status(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	if rec.Scope != ScopeClusterDeployments {
		return rec.History, nil
	}
	out := []RevisionRecord{}
	for _, k := range slices.Sorted(maps.Keys(rec.Streams)) {
		for _, h := range rec.Streams[k] {
			h.ClusterDeployment = k
			out = append(out, h)
		}
	}
	return out, nil
}

// UndoClusterDeploymentSpec returns the serviceSpec to re-apply to
// ClusterDeployment namespace/name to go back to its revision to (0: the
// one before its current). Re-applying it is a new revision, rolled out
// under the hub-wide policy like any change.
func (c *Controller) UndoClusterDeploymentSpec(ctx context.Context, namespace, name string, to uint64) (objects.ServiceSpec, uint64, error) {
	rec, err := c.Status(ctx, ClusterDeploymentsNamespace, ClusterDeploymentsName)
	if err != nil {
		return objects.ServiceSpec{}, 0, err
	}
	k := namespace + "/" + name
	s := rec.Clusters[k]
	if s == nil {
		return objects.ServiceSpec{}, 0, fmt.Errorf("undo ClusterDeployment %s: %w (the hub-wide rollout does not track it: no such ClusterDeployment, or its cluster is not enrolled)", k, ErrNotFound)
	}
	hist := rec.Streams[k]
	var h *RevisionRecord
	if to == 0 {
		for i := len(hist) - 1; i >= 0; i-- {
			if hist[i].Revision < s.Target {
				h = &hist[i]
				break
			}
		}
		if h == nil {
			return objects.ServiceSpec{}, 0, fmt.Errorf("undo ClusterDeployment %s: %w: revision %d is the oldest kept", k, ErrUnknownRevision, s.Target)
		}
	} else if h = rec.streamRevision(k, to); h == nil {
		var kept []string
		for _, r := range hist {
			kept = append(kept, fmt.Sprint(r.Revision))
		}
		return objects.ServiceSpec{}, 0, fmt.Errorf("undo ClusterDeployment %s: %w %d (kept: %s)", k, ErrUnknownRevision, to, strings.Join(kept, ", "))
	}
	return h.Spec.ServiceSpec, h.Revision, nil
}

// UndoSpec returns the spec to re-apply to go back to revision to (0:
// the revision before the current one), keeping the object's current
// rollout policy. Re-applying it makes a new revision, rolled out under
// that policy like any other change.
func (c *Controller) UndoSpec(ctx context.Context, namespace, name string, to uint64, current *objects.MultiClusterServiceSpec) (objects.MultiClusterServiceSpec, uint64, error) {
	rec, err := c.Status(ctx, namespace, name)
	if err != nil {
		return objects.MultiClusterServiceSpec{}, 0, err
	}
	var h *RevisionRecord
	if to == 0 {
		for i := len(rec.History) - 1; i >= 0; i-- {
			if rec.History[i].Revision < rec.Revision {
				h = &rec.History[i]
				break
			}
		}
		if h == nil {
			return objects.MultiClusterServiceSpec{}, 0, fmt.Errorf("undo rollout %s/%s: %w: revision %d is the oldest kept", namespace, name, ErrUnknownRevision, rec.Revision)
		}
	} else if h = rec.revision(to); h == nil {
		var kept []string
		for _, r := range rec.History {
			kept = append(kept, fmt.Sprint(r.Revision))
		}
		return objects.MultiClusterServiceSpec{}, 0, fmt.Errorf("undo rollout %s/%s: %w %d (kept: %s)", namespace, name, ErrUnknownRevision, to, strings.Join(kept, ", "))
	}
	spec := *current
	spec.ClusterSelector, spec.ServiceSpec = h.Spec.ClusterSelector, h.Spec.ServiceSpec
	return spec, h.Revision, nil
}
