package reconcile

import (
	"time"

	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// Pre-staging. A desired service may carry a staged next version
// (fleetv1.StagedService: a rollout's preStage) with the window
// occurrences in hub time. Until one opens the agent applies the service
// as it is and keeps the next version's chart in its cache; at the first
// window start <= hub now < end it replaces the service by its next
// version in the held desired state, saved in the cache under the same
// revision, so the activation survives a restart and needs no link. The
// hub admits the cluster at the same window start and later sends the
// same version as the plain service. A staged version whose windows have
// all passed is not activated: the agent waits for a new desired state.

// stagedNext returns a service's staged next version when it is usable:
// same namespace/name, a chart digest, 1..MaxStagedWindows windows.
func stagedNext(s *fleetv1.Service) (*fleetv1.Service, []*fleetv1.Window) {
	st := s.GetStaged()
	next, ws := st.GetNext(), st.GetWindows()
	if next == nil || next.GetName() != s.GetName() || next.GetNamespace() != s.GetNamespace() ||
		next.GetChartDigest() == "" || len(ws) == 0 || len(ws) > fleetv1.MaxStagedWindows {
		return nil, nil
	}
	return next, ws
}

// activateStaged activates the staged versions whose window is open at
// hub time, persists that, and returns the desired state to apply, the
// chart digests to prefetch (staged, not active yet) and sets the next
// window start the loop wakes for.
func (r *Reconciler) activateStaged() (*fleetv1.DesiredState, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ds := r.desired
	now := r.cfg.HubNow()
	var prefetch []string
	var wake time.Time
	var activated *fleetv1.DesiredState
	for i, s := range ds.GetServices() {
		next, ws := stagedNext(s)
		if next == nil {
			continue
		}
		open, at := fleetv1.WindowOpen(ws, now)
		if !at.IsZero() && (wake.IsZero() || at.Before(wake)) {
			wake = at
		}
		if !open {
			prefetch = append(prefetch, next.GetChartDigest())
			continue
		}
		if activated == nil {
			activated = proto.Clone(ds).(*fleetv1.DesiredState)
		}
		n := proto.Clone(next).(*fleetv1.Service)
		n.Staged = nil
		activated.Services[i] = n
		r.log.Info("staged version activated in its maintenance window", "service", key(s.GetNamespace(), s.GetName()),
			"chart_version", n.GetChartVersion(), "hub_time", now.UTC().Format(time.RFC3339))
	}
	r.stagedWake = wake
	if activated == nil {
		return ds, prefetch
	}
	b, err := proto.Marshal(activated)
	if err == nil {
		err = r.cfg.Cache.SaveDesired(activated.GetRevision(), b)
	}
	if err != nil {
		// Applied anyway (its window is open); saved on the next pass.
		r.log.Warn("save the activation of a staged version", "revision", activated.GetRevision(), "err", err)
		return activated, prefetch
	}
	r.desired = activated
	return activated, prefetch
}
