package fleetsim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/agent/internal/link"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// Service states a simulated agent reports, as the reconciler does.
const (
	stateDeployed = "Deployed"
	stateFailed   = "Failed"
)

// agent is one simulated agent: a real link.Link (enrolment, TLS, yamux,
// gRPC, outbox drain) whose Handler, instead of running Helm, marks each
// changed service Deployed (or Failed) after the fleet's deploy delay and
// queues the same StatusReport the reconciler queues.
type agent struct {
	f       *Fleet
	store   *memStore
	cluster string
	// failScore in [0,1) decides, against the fleet's fail rate, whether
	// this agent fails the services it is told to fail.
	failScore float64

	mu      sync.Mutex
	desired *fleetv1.DesiredState
	// desiredAt is when the held desired state last changed.
	desiredAt time.Time
	svc       map[string]*svcState
	reported  []*fleetv1.ServiceStatus
	// applies counts simulated Helm applies (a service whose values hash
	// changed); deployedAt is when the last one finished.
	applies    int
	deployedAt time.Time
	timer      *time.Timer
	// staged fires at the next window start of a staged service.
	staged  *time.Timer
	stopped bool           // no more deploys: the cache is closing
	busy    sync.WaitGroup // deploys running
	online  bool
	cancel  context.CancelFunc
	wake    chan struct{}
	l       *link.Link
}

type svcState struct {
	template, hash, chartVersion, state, message string
	revision                                     uint64
	since                                        time.Time
}

func key(ns, name string) string { return ns + "/" + name }

// Revision implements link.Handler.
func (a *agent) Revision() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.desired.GetRevision()
}

// Epoch implements link.EpochHandler.
func (a *agent) Epoch() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.desired.GetEpoch()
}

// Desired merges a delta or full state as the reconciler does (same
// epoch and revision rules) and schedules a simulated deploy.
func (a *agent) Desired(_ context.Context, ds *fleetv1.DesiredState) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	next, _, err := fleetv1.Merge(a.desired, ds)
	if err != nil || next == nil {
		return err
	}
	if a.store.db != nil {
		b, err := proto.Marshal(next)
		if err != nil {
			return err
		}
		if err := a.store.saveDesired(next.GetRevision(), b); err != nil {
			return fmt.Errorf("store desired revision %d: %w", next.GetRevision(), err)
		}
	}
	a.desired = next
	a.desiredAt = a.f.cfg.Now()
	if a.stopped {
		return nil
	}
	a.stageLocked()
	if a.timer == nil {
		a.timer = time.AfterFunc(a.f.cfg.DeployDelay, a.deploy)
	} else {
		a.timer.Reset(a.f.cfg.DeployDelay)
	}
	return nil
}

// stageLocked honours staged next versions as the reconciler does: one
// whose window is open (at the fleet's clock, standing for hub time)
// replaces its service in the held desired state, saved under the same
// revision; otherwise a timer fires at the next window start. No link
// is needed.
func (a *agent) stageLocked() {
	now := a.f.cfg.Now()
	var wake time.Time
	var activated *fleetv1.DesiredState
	for i, s := range a.desired.GetServices() {
		st := s.GetStaged()
		next, ws := st.GetNext(), st.GetWindows()
		if next == nil || next.GetName() != s.GetName() || next.GetNamespace() != s.GetNamespace() || len(ws) == 0 || len(ws) > fleetv1.MaxStagedWindows {
			continue
		}
		open, at := fleetv1.WindowOpen(ws, now)
		if !at.IsZero() && (wake.IsZero() || at.Before(wake)) {
			wake = at
		}
		if !open {
			continue
		}
		if activated == nil {
			activated = proto.Clone(a.desired).(*fleetv1.DesiredState)
		}
		n := proto.Clone(next).(*fleetv1.Service)
		n.Staged = nil
		activated.Services[i] = n
	}
	if activated != nil {
		if a.store.db != nil {
			b, err := proto.Marshal(activated)
			if err == nil {
				err = a.store.saveDesired(activated.GetRevision(), b)
			}
			if err != nil {
				a.f.log.Error("store the activation of a staged version", "cluster", a.cluster, "err", err)
			}
		}
		a.desired, a.desiredAt = activated, now
	}
	if a.staged != nil {
		a.staged.Stop()
		a.staged = nil
	}
	if !wake.IsZero() {
		a.staged = time.AfterFunc(wake.Sub(now), a.windowOpens)
	}
}

// windowOpens activates the staged versions whose window just opened and
// deploys them.
func (a *agent) windowOpens() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	a.stageLocked()
	if a.timer == nil {
		a.timer = time.AfterFunc(a.f.cfg.DeployDelay, a.deploy)
	} else {
		a.timer.Reset(a.f.cfg.DeployDelay)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// deploy is the simulated reconcile pass: every service whose values hash
// changed is "applied" (Deployed, or Failed when the fleet says so), the
// rest keep their state; a report is queued when anything changed. It runs
// whether or not the link is up, as the reconciler does from its cache.
func (a *agent) deploy() {
	rate, version := a.f.failure()
	now := a.f.cfg.Now()
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		return
	}
	a.busy.Add(1)
	defer a.busy.Done()
	ds := a.desired
	want := map[string]bool{}
	for _, s := range ds.GetServices() {
		k := key(s.GetNamespace(), s.GetName())
		want[k] = true
		st := a.svc[k]
		if st == nil {
			st = &svcState{}
			a.svc[k] = st
		}
		st.revision, st.template = ds.GetRevision(), s.GetTemplate()
		if st.hash == s.GetValuesHash() && st.chartVersion == s.GetChartVersion() && st.state != "" {
			continue
		}
		a.applies++
		a.deployedAt = now
		st.hash, st.chartVersion, st.since = s.GetValuesHash(), s.GetChartVersion(), now
		st.state, st.message = stateDeployed, ""
		if a.failScore < rate && (version == "" || version == s.GetChartVersion()) {
			st.state, st.message = stateFailed, "simulated failure (tether-fleetsim --fail-rate)"
		}
	}
	for k := range a.svc {
		if !want[k] {
			delete(a.svc, k)
		}
	}
	cur := a.statusesLocked()
	changed := len(cur) != len(a.reported)
	for i := 0; !changed && i < len(cur); i++ {
		x, y := cur[i], a.reported[i]
		changed = x.GetName() != y.GetName() || x.GetNamespace() != y.GetNamespace() || x.GetState() != y.GetState() ||
			x.GetRevision() != y.GetRevision() || x.GetLastDeployedHash() != y.GetLastDeployedHash()
	}
	if changed {
		a.reported = cur
	}
	l := a.l
	a.mu.Unlock()
	if !changed {
		return
	}
	rep := &fleetv1.StatusReport{Revision: ds.GetRevision(), Services: cur, Observed: timestamppb.New(now)}
	b, err := proto.Marshal(rep)
	if err != nil {
		a.f.log.Error("marshal status report", "cluster", a.cluster, "err", err)
		return
	}
	if err := a.store.enqueue(link.KindStatus, b); err != nil {
		a.f.log.Error("queue status report", "cluster", a.cluster, "err", err)
		return
	}
	if l != nil {
		l.KickOutbox()
	}
}

func (a *agent) statusesLocked() []*fleetv1.ServiceStatus {
	out := make([]*fleetv1.ServiceStatus, 0, len(a.svc))
	for _, k := range slices.Sorted(mapKeys(a.svc)) {
		st := a.svc[k]
		ns, name, _ := cutKey(k)
		out = append(out, &fleetv1.ServiceStatus{
			Name: name, Namespace: ns, Template: st.template, State: st.state, Revision: st.revision,
			LastDeployedHash: st.hash, Message: st.message, Time: timestamppb.New(st.since),
		})
	}
	return out
}

func cutKey(k string) (ns, name string, ok bool) {
	for i := range len(k) {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return "", k, false
}

// run keeps the agent's link up while the agent is online: going offline
// cancels the link (its session ends as a dark site's would), coming back
// starts a new link from the same identity and outbox. started is called
// once, at the first connect or when the first attempt ends.
func (a *agent) run(ctx context.Context, started func()) {
	var once sync.Once
	done := func() { once.Do(started) }
	defer done()
	for {
		for !a.isOnline() {
			done() // a dark agent does not hold up the others' start
			select {
			case <-ctx.Done():
				return
			case <-a.wake:
			}
		}
		lctx, cancel := context.WithCancel(ctx)
		l, err := a.f.newLink(a)
		if err != nil {
			cancel()
			a.f.log.Error("simulated agent: new link", "cluster", a.cluster, "err", err)
			return
		}
		a.mu.Lock()
		a.cancel, a.l = cancel, l
		online := a.online
		a.mu.Unlock()
		if !online {
			cancel()
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				if a.connected() {
					done()
					return
				}
				select {
				case <-lctx.Done():
					return
				case <-t.C:
				}
			}
		})
		err = l.Run(lctx)
		cancel()
		wg.Wait()
		l.Close()
		a.mu.Lock()
		a.cancel, a.l = nil, nil
		a.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			done()
			a.f.log.Error("simulated agent stopped", "cluster", a.cluster, "err", err)
			return
		}
	}
}

// stop ends the agent's deploys and waits for a running one.
func (a *agent) stop() {
	a.mu.Lock()
	a.stopped = true
	if a.timer != nil {
		a.timer.Stop()
	}
	if a.staged != nil {
		a.staged.Stop()
	}
	a.mu.Unlock()
	a.busy.Wait()
}

func (a *agent) connected() bool {
	a.store.mu.Lock()
	defer a.store.mu.Unlock()
	return a.store.state == link.StateConnected
}

func (a *agent) isOnline() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.online
}

// setOnline takes the agent's link down (false) or lets it connect again.
func (a *agent) setOnline(on bool) {
	a.mu.Lock()
	a.online = on
	cancel := a.cancel
	a.mu.Unlock()
	if !on && cancel != nil {
		cancel()
	}
	if on {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

// AgentStatus is what the simulator knows of one agent.
type AgentStatus struct {
	Cluster string `json:"cluster"`
	// Online: the schedule (or the control API) lets it connect;
	// Connected: its link holds a session now.
	Online    bool   `json:"online"`
	Connected bool   `json:"connected"`
	Connects  uint64 `json:"connects"`
	// ConnectedAt is its last transition to Connected.
	ConnectedAt time.Time `json:"connectedAt,omitzero"`
	Revision    uint64    `json:"revision"`
	// DesiredAt: when its held desired state last changed.
	DesiredAt time.Time `json:"desiredAt,omitzero"`
	// Applies counts simulated applies since the simulator started.
	Applies    int             `json:"applies"`
	DeployedAt time.Time       `json:"deployedAt,omitzero"`
	Outbox     uint64          `json:"outbox"`
	Services   []ServiceStatus `json:"services,omitempty"`
}

// ServiceStatus is one service a simulated agent holds.
type ServiceStatus struct {
	Namespace    string `json:"namespace"`
	Name         string `json:"name"`
	ChartVersion string `json:"chartVersion"`
	State        string `json:"state"`
}

func (a *agent) status() AgentStatus {
	a.mu.Lock()
	s := AgentStatus{Cluster: a.cluster, Online: a.online, Revision: a.desired.GetRevision(), DesiredAt: a.desiredAt,
		Applies: a.applies, DeployedAt: a.deployedAt}
	held := map[string]*svcState{}
	for k, st := range a.svc {
		held[k] = st
	}
	for _, d := range a.desired.GetServices() {
		ss := ServiceStatus{Namespace: d.GetNamespace(), Name: d.GetName(), ChartVersion: d.GetChartVersion()}
		if st := held[key(d.GetNamespace(), d.GetName())]; st != nil && st.chartVersion == d.GetChartVersion() {
			ss.State = st.state
		}
		s.Services = append(s.Services, ss)
	}
	a.mu.Unlock()
	a.store.mu.Lock()
	s.Connected = a.store.state == link.StateConnected
	s.Connects, s.ConnectedAt = a.store.connects, a.store.connectedAt
	a.store.mu.Unlock()
	if st, err := a.store.OutboxStats(); err == nil {
		s.Outbox = st.Pending
	}
	return s
}
