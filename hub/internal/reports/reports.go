// Package reports keeps the latest service status each agent reported, so
// the console can show per-cluster, per-service state next to the desired
// state. One record per cluster is overwritten by newer reports; a report
// older than the stored one (a resend after reconnect) is ignored.
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
	Cluster  string    `json:"cluster"`
	Revision uint64    `json:"revision"`
	Observed time.Time `json:"observed"`
	Services []Service `json:"services"`
}

// Store is the part of the hub store reports use.
type Store interface {
	Get(ctx context.Context, kind, namespace, name string) (store.Object, error)
	List(ctx context.Context, kind, namespace string) ([]store.Object, error)
	Txn(ctx context.Context, fn func(tx store.Tx) error) error
}

// Reports reads and writes status reports.
type Reports struct {
	Store Store
}

// SaveReport stores rep as cluster's latest report unless a newer one is
// stored already.
func (r *Reports) SaveReport(ctx context.Context, cluster string, rep *fleetv1.StatusReport) error {
	if len(rep.GetServices()) > maxServices {
		return fmt.Errorf("status report of %q: %d services, at most %d", cluster, len(rep.GetServices()), maxServices)
	}
	out := Report{Cluster: cluster, Revision: rep.GetRevision(), Observed: rep.GetObserved().AsTime().UTC()}
	for _, s := range rep.GetServices() {
		out.Services = append(out.Services, Service{
			Name: s.GetName(), Namespace: s.GetNamespace(), Template: s.GetTemplate(), State: s.GetState(),
			Revision: s.GetRevision(), LastDeployedHash: s.GetLastDeployedHash(), Message: s.GetMessage(), Time: s.GetTime().AsTime().UTC(),
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
		if json.Unmarshal(old.Value, &prev) == nil && prev.Observed.After(out.Observed) {
			return nil
		}
		_, err = tx.Update(store.Object{Kind: Kind, Name: cluster, Value: b, ResourceVersion: old.ResourceVersion})
		return err
	})
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
