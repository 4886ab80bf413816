// Package reports keeps the latest service status each agent reported, so
// the console can show per-cluster, per-service state next to the desired
// state. One record per cluster is overwritten by newer reports; a resend
// of an older report after a reconnect is ignored.
//
// Reports are ordered by the agent's outbox sequence number, not by its
// clock: a report whose seq is at most fleetv1.MaxUnackedReports below the
// stored one is a resend; further below, the agent's outbox restarted (a
// new cache) and the report is newer. Agent timestamps later than the
// hub's clock plus MaxClockSkew are clamped to it, so one report from a
// clock running ahead cannot freeze the cluster's status. Reports without
// a seq (older agents) are ordered by their clamped observed time.
package reports

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tetherfleet/tether/hub/internal/store"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// Kind is the store kind of a cluster's report.
const Kind = "ServiceReport"

// maxServices bounds the services in one stored report.
const maxServices = fleetv1.MaxReportServices

// Service is one service's reported status.
type Service struct {
	Name             string    `json:"name"`
	Namespace        string    `json:"namespace"`
	Template         string    `json:"template,omitempty"`
	State            string    `json:"state"`
	Revision         uint64    `json:"revision"`
	LastDeployedHash string    `json:"lastDeployedHash,omitempty"`
	Message          string    `json:"message,omitempty"`
	Time             time.Time `json:"time,omitzero"`
}

// Report is the latest report of one cluster.
type Report struct {
	Cluster  string `json:"cluster"`
	Revision uint64 `json:"revision"`
	// Seq is the agent's outbox sequence number of the report.
	Seq      uint64    `json:"seq,omitempty"`
	Observed time.Time `json:"observed"`
	Services []Service `json:"services"`
}

// Store is the part of the hub store reports use.
type Store interface {
	Get(ctx context.Context, kind, namespace, name string) (store.Object, error)
	List(ctx context.Context, kind, namespace string) ([]store.Object, error)
	Txn(ctx context.Context, fn func(tx store.Tx) error) error
}

// MaxClockSkew is how far ahead of the hub's clock an agent timestamp may
// be before it is clamped.
const MaxClockSkew = 5 * time.Minute

// Reports reads and writes status reports.
type Reports struct {
	Store Store
	// Now is the hub's clock; nil means time.Now.
	Now func() time.Time
}

// clamp bounds an agent timestamp to the hub's now plus MaxClockSkew.
func clamp(t, limit time.Time) time.Time {
	if t.After(limit) {
		return limit
	}
	return t
}

// SaveReport stores rep as cluster's latest report unless a newer one is
// stored already.
func (r *Reports) SaveReport(ctx context.Context, cluster string, rep *fleetv1.StatusReport) error {
	if len(rep.GetServices()) > maxServices {
		return fmt.Errorf("status report of %q: %d services, at most %d", cluster, len(rep.GetServices()), maxServices)
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	limit := now().UTC().Add(MaxClockSkew)
	out := Report{Cluster: cluster, Revision: rep.GetRevision(), Seq: rep.GetSeq(), Observed: clamp(rep.GetObserved().AsTime().UTC(), limit)}
	for _, s := range rep.GetServices() {
		var at time.Time
		if s.GetTime() != nil {
			at = clamp(s.GetTime().AsTime().UTC(), limit)
		}
		out.Services = append(out.Services, Service{
			Name: s.GetName(), Namespace: s.GetNamespace(), Template: s.GetTemplate(), State: s.GetState(),
			Revision: s.GetRevision(), LastDeployedHash: s.GetLastDeployedHash(), Message: s.GetMessage(), Time: at,
		})
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return r.Store.Txn(ctx, func(tx store.Tx) error {
		old, err := tx.Get(Kind, "", cluster)
		if errors.Is(err, store.ErrNotFound) {
			_, err = tx.Create(store.Object{Kind: Kind, Name: cluster, Value: b})
			return err
		}
		if err != nil {
			return err
		}
		var prev Report
		if json.Unmarshal(old.Value, &prev) == nil && older(out, prev) {
			return nil
		}
		_, err = tx.Update(store.Object{Kind: Kind, Name: cluster, Value: b, ResourceVersion: old.ResourceVersion})
		return err
	})
}

// older reports whether rep is older than the stored prev (see the
// package comment).
func older(rep, prev Report) bool {
	if rep.Seq > 0 && prev.Seq > 0 {
		return rep.Seq <= prev.Seq && prev.Seq-rep.Seq < fleetv1.MaxUnackedReports
	}
	return prev.Observed.After(rep.Observed)
}

// Get returns cluster's latest report; ok is false when it has none.
func (r *Reports) Get(ctx context.Context, cluster string) (Report, bool, error) {
	o, err := r.Store.Get(ctx, Kind, "", cluster)
	if errors.Is(err, store.ErrNotFound) {
		return Report{}, false, nil
	}
	if err != nil {
		return Report{}, false, err
	}
	var rep Report
	if err := json.Unmarshal(o.Value, &rep); err != nil {
		return Report{}, false, fmt.Errorf("decode report of %q: %w", cluster, err)
	}
	return rep, true, nil
}

// List returns every cluster's latest report.
func (r *Reports) List(ctx context.Context) ([]Report, error) {
	objs, err := r.Store.List(ctx, Kind, "")
	if err != nil {
		return nil, err
	}
	out := make([]Report, 0, len(objs))
	for _, o := range objs {
		var rep Report
		if err := json.Unmarshal(o.Value, &rep); err != nil {
			return nil, fmt.Errorf("decode report of %q: %w", o.Name, err)
		}
		out = append(out, rep)
	}
	return out, nil
}

// Delete forgets a cluster's report (the cluster was deleted).
func (r *Reports) Delete(ctx context.Context, cluster string) error {
	return r.Store.Txn(ctx, func(tx store.Tx) error {
		err := tx.Delete(Kind, "", cluster, 0)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
}
