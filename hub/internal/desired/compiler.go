package desired

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/hub/internal/controller"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/store"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	"github.com/tetherfleet/tether/protocol/tunnel"
)

// Store kinds this package reads or owns.
const (
	// KindDesiredState is owned by this package: one cluster-scoped object
	// per cluster, named after it, holding a State as JSON.
	KindDesiredState = "DesiredState"
	// kindCluster is the fleet registry's cluster record (fleet.Cluster).
	kindCluster = "Cluster"
	// KindEpoch is owned by this package: one cluster-scoped object named
	// epochName holding an epochRecord, the identity of this store's
	// revision history.
	KindEpoch = "DesiredEpoch"
	epochName = "epoch"
)

// maxHistory bounds State.History; the horizon rises past what is dropped.
const maxHistory = 64

// epochRecord is the stored epoch.
type epochRecord struct {
	Epoch   string    `json:"epoch"`
	Created time.Time `json:"created"`
}

// newEpoch returns a random epoch ID (128 bits, hex).
func newEpoch() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// inputKinds are the kinds whose changes trigger a recompile: clusters,
// then the object kinds registered as compile inputs.
var inputKinds = append([]string{kindCluster}, compileKinds.CompileInputs()...)

// compileKinds are the object kinds the compiler reads (read-only).
var compileKinds = objects.DefaultKinds()

// State is one cluster's stored desired state.
type State struct {
	Cluster string `json:"cluster"`
	// Revision is the store revision of the write that last changed the
	// services or tombstones.
	Revision uint64 `json:"revision"`
	// Horizon: an agent whose revision is below it may have missed pruned
	// tombstones (or holds state from before the cluster was re-created)
	// and gets a full state.
	Horizon uint64 `json:"horizon,omitempty"`
	// History holds the revisions this cluster's state had (ascending, the
	// last maxHistory, Revision last). An agent's revision at or above
	// History[0] that is not in it comes from another history: a store
	// restored from a backup, whose new writes reuse revision numbers.
	History    []uint64    `json:"history,omitempty"`
	Services   []Service   `json:"services"`
	Tombstones []Tombstone `json:"tombstones,omitempty"`
	// ScrapeConfigs is the telemetry part: the ScrapeConfigs matching the
	// cluster. TelemetryRevision is the revision in which that set last
	// changed; a delta over an older revision carries the whole set.
	ScrapeConfigs     []ScrapeConfig `json:"scrapeConfigs,omitempty"`
	TelemetryRevision uint64         `json:"telemetryRevision,omitempty"`
}

// Tombstone records a deleted service.
type Tombstone struct {
	Name      string    `json:"name"`
	Namespace string    `json:"namespace"`
	Revision  uint64    `json:"revision"`
	DeletedAt time.Time `json:"deletedAt"`
}

// Store is the part of the hub store the Compiler uses.
type Store interface {
	Get(ctx context.Context, kind, namespace, name string) (store.Object, error)
	Txn(ctx context.Context, fn func(tx store.Tx) error) error
	Watch(ctx context.Context, kind string, fromRevision uint64) (<-chan store.Event, error)
	Revision(ctx context.Context) (uint64, error)
}

// Config configures a Compiler.
type Config struct {
	Store  Store
	Logger *slog.Logger
	// Now is the clock for tombstones; nil means time.Now.
	Now func() time.Time
	// TombstoneGrace is how long a deleted service is remembered so that
	// long-offline agents still learn of it. Default 30 days.
	TombstoneGrace time.Duration
	// Debounce is how long Run waits after a change before recompiling, to
	// batch bursts. Default 100ms.
	Debounce time.Duration
	// Resync is how often Run recompiles without a change (prunes
	// tombstones). Default 1h.
	Resync time.Duration
	// SystemNamespaces hold ServiceTemplates every namespace may use.
	// Default objects.DefaultSystemNamespaces().
	SystemNamespaces []string
	// MaxStateBytes bounds one cluster's desired state as sent to its agent
	// (every service and tombstone in one DesiredState message). A compile
	// result over it is not stored: the cluster keeps its last good state
	// and each source gets a DesiredStateTooLarge problem. Default: the
	// tunnel's message limit less 64 KiB of headroom.
	MaxStateBytes int
	// Admitter, when set, gives the rollout controller's admissions (see
	// Admission); nil: every cluster takes every change at once.
	Admitter Admitter
}

// Admitter is the rollout controller as the Compiler consults it.
type Admitter interface {
	// AdmissionKinds are the store kinds admissions are kept in; a change
	// to one recompiles.
	AdmissionKinds() []string
	// Admissions reads every admission inside the compiler's read
	// transaction, so they and the inputs are one consistent view.
	Admissions(tx store.Tx) (map[Ref]*Admission, error)
	// GatesClusterDeployments reports whether ClusterDeployment changes
	// roll out gradually under a hub-wide policy: a ClusterDeployment
	// with no admission then keeps what its cluster has
	// (Inputs.GateClusterDeployments).
	GatesClusterDeployments() bool
}

// DefaultConfig returns the defaults New applies to zero fields.
func DefaultConfig() Config {
	return Config{TombstoneGrace: 30 * 24 * time.Hour, Debounce: 100 * time.Millisecond, Resync: time.Hour,
		SystemNamespaces: objects.DefaultSystemNamespaces(),
		MaxStateBytes:    tunnel.DefaultConfig().MaxRecvMsgSize - 64<<10}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("desired: Config.Store is required")
	case c.MaxStateBytes < 0:
		return errors.New("desired: Config.MaxStateBytes must not be negative")
	case c.TombstoneGrace < 0, c.Debounce < 0, c.Resync < 0:
		return errors.New("desired: Config durations must not be negative")
	}
	return nil
}

// Compiler keeps every cluster's desired state in the store, up to date
// with the objects it is compiled from, and answers agents' delta
// requests.
type Compiler struct {
	cfg Config
	log *slog.Logger

	compileMu sync.Mutex // serialises Recompile

	mu       sync.RWMutex
	loaded   bool // states reflects the store
	epoch    string
	states   map[string]*State
	problems []Problem
	compiled uint64            // store revision the last compile read
	kinds    []string          // watched: inputKinds and the Admitter's kinds
	prints   map[string]string // input "kind/ns/name" -> fingerprint of what matters
	subs     map[string]map[chan struct{}]struct{}
	funcs    map[string]map[*func()]struct{}
}

// New returns a Compiler.
func New(cfg Config) (*Compiler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.TombstoneGrace == 0 {
		cfg.TombstoneGrace = d.TombstoneGrace
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = d.Debounce
	}
	if cfg.SystemNamespaces == nil {
		cfg.SystemNamespaces = d.SystemNamespaces
	}
	if cfg.Resync == 0 {
		cfg.Resync = d.Resync
	}
	if cfg.MaxStateBytes == 0 {
		cfg.MaxStateBytes = d.MaxStateBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	kinds := inputKinds
	if cfg.Admitter != nil {
		kinds = append(slices.Clone(inputKinds), cfg.Admitter.AdmissionKinds()...)
	}
	return &Compiler{
		kinds:  kinds,
		cfg:    cfg,
		log:    cfg.Logger,
		states: map[string]*State{},
		prints: map[string]string{},
		subs:   map[string]map[chan struct{}]struct{}{},
		funcs:  map[string]map[*func()]struct{}{},
	}, nil
}

// snapshot is what Recompile reads in one transaction.
type snapshot struct {
	rev    uint64
	epoch  string
	in     Inputs
	states map[string]*State
	rvs    map[string]uint64 // DesiredState resourceVersions
	prints map[string]string
}

// Recompile reads every input in one store transaction, compiles, and
// writes the DesiredState of each cluster whose services changed (its
// revision is the revision of that write), tombstones for services that
// went away, and deletes the DesiredState of clusters that no longer
// exist. It returns the store revision the inputs were read at.
func (c *Compiler) Recompile(ctx context.Context) (uint64, error) {
	c.compileMu.Lock()
	defer c.compileMu.Unlock()
	for attempt := 0; ; attempt++ {
		snap, err := c.read(ctx)
		if err != nil {
			return 0, err
		}
		prev := make(map[string][]Service, len(snap.states))
		for name, st := range snap.states {
			prev[name] = st.Services
		}
		snap.in.Previous = prev
		snap.in.SystemNamespaces = c.cfg.SystemNamespaces
		out, problems := Compile(snap.in)
		changed, tooLarge, err := c.write(ctx, snap, out)
		if (errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrAlreadyExists)) && attempt < 3 {
			continue // someone else wrote a DesiredState; read again
		}
		if err != nil {
			return 0, err
		}
		c.mu.Lock()
		c.loaded = true
		c.epoch = snap.epoch
		c.problems = append(problems, tooLarge...)
		sortProblems(c.problems)
		c.compiled = snap.rev
		c.prints = snap.prints
		c.states = snap.states
		c.notifyLocked(changed)
		c.mu.Unlock()
		return snap.rev, nil
	}
}

func (c *Compiler) read(ctx context.Context) (*snapshot, error) {
	snap := &snapshot{states: map[string]*State{}, rvs: map[string]uint64{}, prints: map[string]string{}}
	err := c.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		snap.rev = tx.Revision()
		ep, err := readEpoch(tx)
		if err != nil {
			return err
		}
		snap.epoch = ep
		objs, err := tx.List(kindCluster, "")
		if err != nil {
			return err
		}
		for _, o := range objs {
			var cl Cluster
			if err := json.Unmarshal(o.Value, &struct {
				Name      *string            `json:"name"`
				Labels    *map[string]string `json:"labels"`
				APIServer *string            `json:"apiServer"`
			}{&cl.Name, &cl.Labels, &cl.APIServer}); err != nil {
				return fmt.Errorf("cluster %s: %w", o.Name, err)
			}
			cl.Name = o.Name
			snap.in.Clusters = append(snap.in.Clusters, cl)
			snap.prints[printKey(o.Kind, o.Namespace, o.Name)] = fingerprint(o)
		}
		for _, kind := range inputKinds[1:] {
			sos, err := tx.List(kind, "")
			if err != nil {
				return err
			}
			for _, so := range sos {
				o, err := compileKinds.FromStored(kind, so.Value, so.ResourceVersion, so.CreateRevision)
				if err != nil {
					return fmt.Errorf("%s %s/%s: %w", kind, so.Namespace, so.Name, err)
				}
				snap.prints[printKey(so.Kind, so.Namespace, so.Name)] = fingerprint(so)
				switch o := o.(type) {
				case *objects.ClusterDeployment:
					snap.in.ClusterDeployments = append(snap.in.ClusterDeployments, o)
				case *objects.MultiClusterService:
					snap.in.MultiClusterServices = append(snap.in.MultiClusterServices, o)
				case *objects.ServiceTemplate:
					snap.in.ServiceTemplates = append(snap.in.ServiceTemplates, o)
				case *objects.ConfigMap:
					snap.in.ConfigMaps = append(snap.in.ConfigMaps, o)
				case *objects.Secret:
					snap.in.Secrets = append(snap.in.Secrets, o)
				case *objects.AccessManagement:
					snap.in.AccessManagements = append(snap.in.AccessManagements, o)
				case *objects.ServiceTemplateChain:
					snap.in.ServiceTemplateChains = append(snap.in.ServiceTemplateChains, o)
				case *objects.ScrapeConfig:
					snap.in.ScrapeConfigs = append(snap.in.ScrapeConfigs, o)
				}
			}
		}
		if c.cfg.Admitter != nil {
			if snap.in.Admissions, err = c.cfg.Admitter.Admissions(tx); err != nil {
				return fmt.Errorf("rollout admissions: %w", err)
			}
			snap.in.GateClusterDeployments = c.cfg.Admitter.GatesClusterDeployments()
		}
		sos, err := tx.List(KindDesiredState, "")
		if err != nil {
			return err
		}
		for _, so := range sos {
			var st State
			if err := json.Unmarshal(so.Value, &st); err != nil {
				return fmt.Errorf("DesiredState %s: %w", so.Name, err)
			}
			snap.states[so.Name] = &st
			snap.rvs[so.Name] = so.ResourceVersion
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("desired: read inputs: %w", err)
	}
	return snap, nil
}

// write stores the states that changed, in one transaction, and updates
// snap.states to what was written. It returns the changed clusters, and a
// problem per source of a cluster whose state is over MaxStateBytes (that
// cluster keeps its previous state).
func (c *Compiler) write(ctx context.Context, snap *snapshot, out map[string]ClusterDesired) ([]string, []Problem, error) {
	now := c.cfg.Now().UTC()
	var changed []string
	var tooLarge []Problem
	next := map[string]*State{}
	err := c.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		changed, tooLarge, next = nil, nil, map[string]*State{}
		rev := tx.Revision() + 1 // the revision this transaction commits as
		if snap.epoch == "" {
			// The store's first compile: give its history an identity.
			// A backup of the store keeps it; a new store gets another.
			rec := epochRecord{Epoch: newEpoch(), Created: now}
			v, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if _, err := tx.Create(store.Object{Kind: KindEpoch, Name: epochName, Value: v}); err != nil {
				return fmt.Errorf("desired: create epoch: %w", err)
			}
			snap.epoch = rec.Epoch
		}
		for _, name := range sortedKeys(out) {
			old := snap.states[name]
			st, write := nextState(old, out[name], rev, now, c.cfg.TombstoneGrace)
			if write {
				if size := wireSize(st); size > c.cfg.MaxStateBytes {
					tooLarge = append(tooLarge, tooLargeProblems(name, st, old, size, c.cfg.MaxStateBytes)...)
					if old != nil {
						next[name] = old
					}
					continue
				}
			}
			next[name] = st
			if !write {
				continue
			}
			v, err := json.Marshal(st)
			if err != nil {
				return err
			}
			so := store.Object{Kind: KindDesiredState, Name: name, Value: v}
			if old == nil {
				_, err = tx.Create(so)
			} else {
				so.ResourceVersion = snap.rvs[name]
				_, err = tx.Update(so)
			}
			if err != nil {
				return fmt.Errorf("desired: write %s: %w", name, err)
			}
			changed = append(changed, name)
		}
		for _, name := range sortedKeys(snap.states) {
			if _, ok := out[name]; ok {
				continue
			}
			if err := tx.Delete(KindDesiredState, "", name, snap.rvs[name]); err != nil && !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("desired: delete %s: %w", name, err)
			}
			changed = append(changed, name)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	snap.states = next
	return changed, tooLarge, nil
}

// wireSize is the size of the DesiredState message carrying every service
// and tombstone of st: no full state or delta of it is larger.
func wireSize(st *State) int {
	ds := &fleetv1.DesiredState{Cluster: st.Cluster, Revision: st.Revision, Full: true, Epoch: strings.Repeat("0", 32)}
	for i := range st.Services {
		ds.Services = append(ds.Services, wireService(&st.Services[i]))
	}
	for _, t := range st.Tombstones {
		ds.Tombstones = append(ds.Tombstones, &fleetv1.Tombstone{Name: t.Name, Namespace: t.Namespace, Revision: t.Revision, DeletedAt: timestamppb.New(t.DeletedAt)})
	}
	ds.Telemetry = wireTelemetry(st)
	return proto.Size(ds)
}

// tooLargeProblems gives every service of st a problem: the API shows
// them in their source's status.
func tooLargeProblems(cluster string, st, old *State, size, limit int) []Problem {
	keep := "it has no desired state yet"
	if old != nil {
		keep = fmt.Sprintf("the cluster keeps its last good desired state (revision %d)", old.Revision)
	}
	out := make([]Problem, 0, len(st.Services))
	for _, s := range st.Services {
		out = append(out, Problem{Cluster: cluster, Source: s.Source, Service: s.Key(), Code: ProblemTooLarge,
			Reason: fmt.Sprintf("the desired state of cluster %s would be %d bytes, over the limit of %d bytes for one message to its agent (shrink values or valuesFrom sources, or spread services over fewer clusters' selectors); %s",
				cluster, size, limit, keep)})
	}
	return out
}

// nextState merges a compile result into the previous state. It reports
// whether the state must be written; Revision grows only when services or
// tombstones change (pruning alone keeps it).
func nextState(old *State, cd ClusterDesired, rev uint64, now time.Time, grace time.Duration) (*State, bool) {
	if old == nil {
		st := &State{Cluster: cd.Cluster, Revision: rev, Horizon: rev, History: []uint64{rev}, Services: cd.Services,
			ScrapeConfigs: cd.ScrapeConfigs, TelemetryRevision: rev}
		for i := range st.Services {
			st.Services[i].Revision = rev
		}
		if st.Services == nil {
			st.Services = []Service{}
		}
		return st, true
	}
	st := &State{Cluster: cd.Cluster, Revision: old.Revision, Horizon: old.Horizon, History: old.History, Services: make([]Service, 0, len(cd.Services)),
		ScrapeConfigs: cd.ScrapeConfigs, TelemetryRevision: old.TelemetryRevision}
	changed := false
	if !equalScrapeConfigs(old.ScrapeConfigs, cd.ScrapeConfigs) {
		st.TelemetryRevision = rev
		changed = true
	}
	oldSvc := map[string]*Service{}
	for i := range old.Services {
		oldSvc[old.Services[i].Key()] = &old.Services[i]
	}
	newKeys := map[string]bool{}
	for _, s := range cd.Services {
		newKeys[s.Key()] = true
		if o, ok := oldSvc[s.Key()]; ok && equalService(o, &s) {
			s.Revision = o.Revision
		} else {
			s.Revision = rev
			changed = true
		}
		st.Services = append(st.Services, s)
	}
	if !changed && len(cd.Services) == len(old.Services) {
		// same set; order may differ only if content did
		for i := range cd.Services {
			if cd.Services[i].Key() != old.Services[i].Key() {
				changed = true
				break
			}
		}
	}
	for _, t := range old.Tombstones {
		if newKeys[t.Namespace+"/"+t.Name] {
			changed = true // re-created: the service entry supersedes it
			continue
		}
		st.Tombstones = append(st.Tombstones, t)
	}
	for _, o := range old.Services {
		if !newKeys[o.Key()] {
			st.Tombstones = append(st.Tombstones, Tombstone{Name: o.Name, Namespace: o.Namespace, Revision: rev, DeletedAt: now})
			changed = true
		}
	}
	pruned := false
	st.Tombstones = slices.DeleteFunc(st.Tombstones, func(t Tombstone) bool {
		if now.Sub(t.DeletedAt) > grace {
			st.Horizon = max(st.Horizon, t.Revision)
			pruned = true
			return true
		}
		return false
	})
	if changed {
		st.Revision = rev
		st.History = append(slices.Clone(old.History), rev)
		if n := len(st.History); n > maxHistory {
			st.History = st.History[n-maxHistory:]
			// An agent below what is kept cannot be checked: full state.
			st.Horizon = max(st.Horizon, st.History[0])
		}
	}
	return st, changed || pruned
}

// holds reports whether rev can be a revision of this cluster's history:
// one it had, or one older than the recorded history (the horizon decides
// those). A revision above the current one, or a recorded-range revision
// the state never had, belongs to another history.
func (st *State) holds(rev uint64) bool {
	switch {
	case rev == st.Revision:
		return true
	case rev > st.Revision:
		return false
	case len(st.History) == 0 || rev < st.History[0]:
		return true
	}
	_, found := slices.BinarySearch(st.History, rev)
	return found
}

func readEpoch(tx store.Tx) (string, error) {
	o, err := tx.Get(KindEpoch, "", epochName)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var rec epochRecord
	if err := json.Unmarshal(o.Value, &rec); err != nil || rec.Epoch == "" {
		return "", fmt.Errorf("desired: stored epoch %q is not valid: %v", o.Value, err)
	}
	return rec.Epoch, nil
}

// Epoch returns the identity of this store's revision history, "" before
// the first compile of a new store.
func (c *Compiler) Epoch(ctx context.Context) (string, error) {
	c.mu.RLock()
	ep, loaded := c.epoch, c.loaded
	c.mu.RUnlock()
	if ep != "" || loaded {
		return ep, nil
	}
	err := c.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		var err error
		ep, err = readEpoch(tx)
		return err
	})
	return ep, err
}

// Delta returns what an agent that has revision have of epoch haveEpoch
// needs: nil when it is up to date (have == current revision, same
// history, or the cluster has no desired state yet); a full state when
// have is 0, below the tombstone horizon, or from another history;
// otherwise the services and tombstones changed after have.
//
// Another history: haveEpoch names another store (a new hub), or have is
// a revision this cluster's state never had here (above the current one,
// or missing from State.History): the hub's store was restored from a
// backup, which keeps the epoch, and the agent's revision is from the
// lost future. The full state is then authoritative, at a revision that
// may be below the agent's. An empty haveEpoch (an agent older than
// epochs) is judged by the revision alone.
func (c *Compiler) Delta(ctx context.Context, cluster string, have uint64, haveEpoch string) (*fleetv1.DesiredState, error) {
	st, err := c.State(ctx, cluster)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	epoch, err := c.Epoch(ctx)
	if err != nil {
		return nil, err
	}
	otherStore := haveEpoch != "" && epoch != "" && haveEpoch != epoch
	foreign := otherStore || have != 0 && !st.holds(have)
	if have == st.Revision && !foreign {
		return nil, nil
	}
	ds := &fleetv1.DesiredState{Cluster: cluster, Revision: st.Revision, Epoch: epoch}
	if foreign {
		c.log.Warn("agent holds desired state from another history; sending the full state, which replaces it",
			"cluster", cluster, "agent_revision", have, "agent_epoch", haveEpoch, "revision", st.Revision, "epoch", epoch, "other_store", otherStore)
	}
	if have == 0 || have < st.Horizon || foreign {
		ds.Full = true
		for i := range st.Services {
			ds.Services = append(ds.Services, wireService(&st.Services[i]))
		}
		ds.Telemetry = wireTelemetry(st)
		return ds, nil
	}
	if st.TelemetryRevision > have {
		ds.Telemetry = wireTelemetry(st)
	}
	for i := range st.Services {
		if st.Services[i].Revision > have {
			ds.Services = append(ds.Services, wireService(&st.Services[i]))
		}
	}
	for _, t := range st.Tombstones {
		if t.Revision > have {
			ds.Tombstones = append(ds.Tombstones, &fleetv1.Tombstone{
				Name: t.Name, Namespace: t.Namespace, Revision: t.Revision, DeletedAt: timestamppb.New(t.DeletedAt),
			})
		}
	}
	return ds, nil
}

func wireService(s *Service) *fleetv1.Service {
	out := &fleetv1.Service{
		Name:         s.Name,
		Namespace:    s.Namespace,
		Template:     s.Template,
		ChartName:    s.ChartName,
		ChartVersion: s.ChartVersion,
		ChartDigest:  s.ChartDigest,
		ValuesYaml:   s.Values,
		Priority:     s.Priority,
		DependsOn:    s.DependsOn,
		ValuesHash:   s.ValuesHash,
		SyncMode:     s.SyncMode,
		HelmOptions:  wireHelm(s.Helm),
		Staged:       wireStaged(s.Staged),
	}
	wireDrift(s.Drift, out)
	return out
}

func wireStaged(st *Staged) *fleetv1.StagedService {
	if st == nil {
		return nil
	}
	next := st.Next
	next.Staged = nil
	out := &fleetv1.StagedService{Next: wireService(&next)}
	for _, w := range st.Windows {
		out.Windows = append(out.Windows, &fleetv1.Window{Start: timestamppb.New(w.Start), End: timestamppb.New(w.End)})
	}
	return out
}

// State returns a cluster's current desired state (shared: do not modify),
// or an error wrapping store.ErrNotFound.
func (c *Compiler) State(ctx context.Context, cluster string) (*State, error) {
	c.mu.RLock()
	st, loaded := c.states[cluster], c.loaded
	c.mu.RUnlock()
	if st != nil {
		return st, nil
	}
	if loaded {
		return nil, fmt.Errorf("desired state of %s: %w", cluster, store.ErrNotFound)
	}
	so, err := c.cfg.Store.Get(ctx, KindDesiredState, "", cluster)
	if err != nil {
		return nil, fmt.Errorf("desired state of %s: %w", cluster, err)
	}
	var s State
	if err := json.Unmarshal(so.Value, &s); err != nil {
		return nil, fmt.Errorf("desired state of %s: %w", cluster, err)
	}
	return &s, nil
}

// Revision returns a cluster's current desired-state revision (0 if none).
func (c *Compiler) Revision(ctx context.Context, cluster string) (uint64, error) {
	st, err := c.State(ctx, cluster)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return st.Revision, nil
}

// Subscribe returns a channel that receives a value (coalesced: at most
// one pending) whenever the cluster's desired state changes, and a cancel
// function (idempotent) that ends the subscription.
func (c *Compiler) Subscribe(cluster string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	if c.subs[cluster] == nil {
		c.subs[cluster] = map[chan struct{}]struct{}{}
	}
	c.subs[cluster][ch] = struct{}{}
	c.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.subs[cluster], ch)
			if len(c.subs[cluster]) == 0 {
				delete(c.subs, cluster)
			}
			c.mu.Unlock()
		})
	}
}

// SubscribeFunc calls fn whenever the cluster's desired state changes, and
// returns a cancel function (idempotent). fn runs with the compiler's lock
// held: it must not block or call the Compiler. It lets a caller with
// thousands of subscriptions avoid a goroutine parked on each.
func (c *Compiler) SubscribeFunc(cluster string, fn func()) func() {
	key := &fn
	c.mu.Lock()
	if c.funcs[cluster] == nil {
		c.funcs[cluster] = map[*func()]struct{}{}
	}
	c.funcs[cluster][key] = struct{}{}
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.funcs[cluster], key)
			if len(c.funcs[cluster]) == 0 {
				delete(c.funcs, cluster)
			}
			c.mu.Unlock()
		})
	}
}

func (c *Compiler) notifyLocked(clusters []string) {
	for _, name := range clusters {
		for fn := range c.funcs[name] {
			(*fn)()
		}
		for ch := range c.subs[name] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// Compiled returns the store revision the last compile read: desired
// state reflects every input (and admission) written at or before it.
func (c *Compiler) Compiled() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.compiled
}

// Problems returns the problems found by the last compile, sorted by
// source, cluster and service.
func (c *Compiler) Problems() []Problem {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.problems)
}

// ProblemsFor returns the last compile's problems of one source object.
func (c *Compiler) ProblemsFor(kind, namespace, name string) []Problem {
	ref := Ref{Kind: kind, Namespace: namespace, Name: name}
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []Problem
	for _, p := range c.problems {
		if p.Source == ref {
			out = append(out, p)
		}
	}
	return out
}

// Run keeps desired state up to date until ctx is done: it recompiles,
// watches the input kinds from the revision it read, and recompiles
// (debounced) after a change that matters; also every Resync. A watch that
// expires or is compacted starts over with a fresh read; a failed compile
// starts over after a backoff (controller.Loop). It returns nil when ctx
// is cancelled, and an error when the store is closed.
func (c *Compiler) Run(ctx context.Context) error {
	loop, err := controller.New(controller.Config{
		Name:  "desired-state compiler",
		Store: c.cfg.Store,
		Kinds: c.kinds,
		Reconcile: func(ctx context.Context) (controller.Result, error) {
			rev, err := c.Recompile(ctx)
			return controller.Result{Revision: rev}, err
		},
		Relevant: c.relevant,
		Debounce: c.cfg.Debounce,
		Resync:   c.cfg.Resync,
		Logger:   c.log,
	})
	if err != nil {
		return err
	}
	return loop.Run(ctx)
}

// relevant reports whether an event changes compile input: heartbeats
// that touch a Cluster's lastSeen, or status writes on ClusterDeployments,
// do not.
func (c *Compiler) relevant(ev store.Event) bool {
	key := printKey(ev.Object.Kind, ev.Object.Namespace, ev.Object.Name)
	c.mu.Lock()
	defer c.mu.Unlock()
	if ev.Revision <= c.compiled {
		return false
	}
	if c.cfg.Admitter != nil && slices.Contains(c.kinds[len(inputKinds):], ev.Object.Kind) {
		return true // the Admitter writes only when admissions change
	}
	if ev.Type == store.EventDelete {
		delete(c.prints, key)
		return true
	}
	fp := fingerprint(ev.Object)
	if old, ok := c.prints[key]; ok && old == fp {
		return false
	}
	c.prints[key] = fp
	return true
}

func printKey(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

// fingerprint captures the part of a stored input that compiling reads.
func fingerprint(so store.Object) string {
	var v struct {
		Labels   map[string]string `json:"labels"`
		Metadata struct {
			Generation int64 `json:"generation"`
		} `json:"metadata"`
		Status json.RawMessage `json:"status"`
	}
	_ = json.Unmarshal(so.Value, &v)
	create := fmt.Sprint(so.CreateRevision)
	if so.Kind == kindCluster {
		b, _ := json.Marshal(v.Labels) // sorted keys
		return create + " " + string(b)
	}
	if compileKinds.StatusIsCompileInput(so.Kind) {
		return fmt.Sprintf("%s %d %s", create, v.Metadata.Generation, v.Status)
	}
	return fmt.Sprintf("%s %d", create, v.Metadata.Generation)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
