package assemble

import (
	"errors"
	"path/filepath"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link"
	"github.com/tetherfleet/tether/agent/internal/scrape"
	"github.com/tetherfleet/tether/agent/internal/telemetry"
	"github.com/tetherfleet/tether/agent/internal/worker"
)

// Status is what `tether-agent status` prints, served by a running agent
// on its local socket or read from the bbolt file of a stopped one.
type Status struct {
	Running bool        `json:"running"`
	Link    link.Status `json:"link"`
	Outbox  OutboxStats `json:"outbox"`
	// Services is what the reconciler last saw, when the agent runs.
	Services []ServiceStatus `json:"services,omitempty"`
	// HelmWorker is the Helm worker's supervision, when the agent runs and
	// manages a cluster.
	HelmWorker *worker.Stats `json:"helmWorker,omitempty"`
	// Telemetry is the agent's own metric collection, when it runs.
	Telemetry *telemetry.Stats `json:"telemetry,omitempty"`
	// Targets are the scrape targets' last scrapes, when the agent runs
	// scrape configs.
	Targets []scrape.TargetStatus `json:"targets,omitempty"`
}

// ServiceStatus is one service as the reconciler last saw it.
type ServiceStatus struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	State     string `json:"state"`
	Message   string `json:"message,omitempty"`
}

// OutboxStats are the outbox counters, in total and per payload kind.
type OutboxStats struct {
	Pending      uint64 `json:"pending"`
	Bytes        uint64 `json:"bytes"`
	Dropped      uint64 `json:"dropped"`
	DeadLettered uint64 `json:"deadLettered"`
	// Kinds are the same counters per payload kind.
	Kinds map[string]cache.OutboxKindStats `json:"kinds,omitempty"`
}

// statsSource is what statusOf reads from the cache.
type statsSource interface {
	OutboxStats() (cache.OutboxStats, error)
}

func statusOf(ls link.Status, c statsSource, running bool) Status {
	st := Status{Running: running, Link: ls}
	if o, err := c.OutboxStats(); err == nil {
		st.Outbox = OutboxStats{Pending: o.Pending, Bytes: o.Bytes, Dropped: o.Dropped, DeadLettered: o.DeadLettered, Kinds: o.Kinds}
	}
	return st
}

// Status is a snapshot of the running agent.
func (a *Agent) Status() Status {
	st := statusOf(a.link.Status(), a.cache, true)
	if a.worker != nil {
		ws := a.worker.Stats()
		st.HelmWorker = &ws
	}
	if a.collect != nil {
		ts := a.collect.Stats()
		st.Telemetry = &ts
	}
	if a.scrapes != nil {
		st.Targets = a.scrapes.targets()
	}
	if a.rec != nil {
		for _, s := range a.rec.Statuses() {
			st.Services = append(st.Services, ServiceStatus{Name: s.GetName(), Namespace: s.GetNamespace(), State: s.GetState(), Message: s.GetMessage()})
		}
	}
	return st
}

// OfflineStatus reads the bbolt file in dataDir of an agent that is not
// running (read-only; the file must not be held by a running agent).
func OfflineStatus(dataDir string) (Status, error) {
	c, err := cache.OpenReadOnly(filepath.Join(dataDir, DBFile))
	if err != nil {
		return Status{}, err
	}
	defer c.Close()
	ls := link.Status{State: link.StateOffline}
	if id, err := c.Identity(); err == nil {
		ls.Cluster = id.Cluster
		ls.CertExpires = id.NotAfter
		if len(id.HubAddrs) > 0 {
			ls.Hub = id.HubAddrs[0]
		}
	} else if !errors.Is(err, cache.ErrNoIdentity) {
		return Status{}, err
	}
	if s, err := c.LinkState(); err == nil {
		ls.Since, ls.LastContact, ls.LastError, ls.Connects = s.Since, s.LastContact, s.LastError, s.ConnectedCount
		if s.Hub != "" {
			ls.Hub = s.Hub
		}
		if s.State == link.StateRefused {
			ls.State = s.State
		}
	}
	if ls.LastError == "" {
		ls.LastError = "agent is not running"
	}
	if rev, _, err := c.LatestDesired(); err == nil {
		ls.Revision = rev
	}
	return statusOf(ls, c, false), nil
}
