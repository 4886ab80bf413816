package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tetherfleet/tether/hub/internal/controller"
	"github.com/tetherfleet/tether/hub/internal/desired"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/reports"
	"github.com/tetherfleet/tether/hub/internal/store"
)

// Errors of the console operations; match with errors.Is.
var (
	// ErrNotFound: the MultiClusterService has no rollout (no
	// spec.rollout, or the controller has not seen it yet).
	ErrNotFound = errors.New("no such rollout")
	// ErrUnknownStage: approve named a stage the rollout does not have.
	ErrUnknownStage = errors.New("unknown stage")
	// ErrUnknownRevision: undo named a revision not in the history.
	ErrUnknownRevision = errors.New("unknown revision")
)

// Store kinds read.
const (
	kindCluster = "Cluster"
	stateOK     = "Deployed"
	stateFailed = "Failed"
	// syncOneTime services are installed once and never upgraded: their
	// deployed hash stays the first one.
	syncOneTime = "OneTime"
)

// Store is the part of the hub store the controller uses.
type Store interface {
	Txn(ctx context.Context, fn func(tx store.Tx) error) error
	Watch(ctx context.Context, kind string, fromRevision uint64) (<-chan store.Event, error)
	Revision(ctx context.Context) (uint64, error)
}

// Config configures a Controller.
type Config struct {
	Store  Store
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Online reports whether a cluster's agent is connected now; nil
	// means every cluster is.
	Online func(cluster string) bool
	// Compiled returns the store revision the desired-state compiler
	// last read (desired.Compiler.Compiled); a cluster's health is read
	// only once its desired state reflects its admission. Nil: always.
	Compiled func() uint64
	// Resync is the longest wait between two reconciles (connections
	// come and go without store writes). Default 15s.
	Resync time.Duration
	// Debounce: see controller.Config. Default 200ms.
	Debounce time.Duration
	// ClusterDeploymentRollout is the hub-wide policy ClusterDeployment
	// changes (spec.serviceSpec) roll out under (cd.go); nil: they
	// reach their cluster at once. Validated like spec.rollout
	// (objects.ParseRolloutPolicy).
	ClusterDeploymentRollout *objects.Rollout
}

// DefaultConfig returns the defaults New applies to zero fields.
func DefaultConfig() Config {
	return Config{Resync: 15 * time.Second, Debounce: 200 * time.Millisecond}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	if c.Store == nil {
		return errors.New("rollout: Config.Store is required")
	}
	if c.Resync < 0 || c.Debounce < 0 {
		return errors.New("rollout: Config durations must not be negative")
	}
	if c.ClusterDeploymentRollout != nil {
		if _, err := compilePolicy(c.ClusterDeploymentRollout); err != nil {
			return fmt.Errorf("rollout: Config.ClusterDeploymentRollout: %w", err)
		}
	}
	return nil
}

// Controller runs the rollouts of every MultiClusterService with a
// spec.rollout; it is the desired-state compiler's desired.Admitter.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	kinds    *objects.Registry
	cdPolicy *policy // compiled Config.ClusterDeploymentRollout; nil: none
}

// New returns a Controller.
func New(cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.Resync == 0 {
		cfg.Resync = d.Resync
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = d.Debounce
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Controller{cfg: cfg, log: cfg.Logger, kinds: objects.DefaultKinds()}
	if cfg.ClusterDeploymentRollout != nil {
		c.cdPolicy, _ = compilePolicy(cfg.ClusterDeploymentRollout) // checked by Validate
	}
	return c, nil
}

// SetCompiled sets Config.Compiled (the compiler is built after the
// controller it consults).
func (c *Controller) SetCompiled(f func() uint64) { c.cfg.Compiled = f }

// SetOnline sets Config.Online (the gateway is built after the compiler).
func (c *Controller) SetOnline(f func(cluster string) bool) { c.cfg.Online = f }

// Run reconciles until ctx is done, on the hub's controller loop.
func (c *Controller) Run(ctx context.Context) error {
	loop, err := controller.New(controller.Config{
		Name:  "rollout controller",
		Store: c.cfg.Store,
		Kinds: []string{objects.KindMultiClusterService, objects.KindClusterDeployment, kindCluster, reports.Kind, desired.KindDesiredState, KindRollout},
		Reconcile: func(ctx context.Context) (controller.Result, error) {
			wake, err := c.Reconcile(ctx)
			res := controller.Result{RetryAfter: c.cfg.Resync}
			if !wake.IsZero() {
				res.RetryAfter = min(res.RetryAfter, max(wake.Sub(c.cfg.Now()), time.Millisecond))
			}
			return res, err
		},
		Debounce: c.cfg.Debounce,
		Logger:   c.log,
	})
	if err != nil {
		return err
	}
	return loop.Run(ctx)
}

// AdmissionKinds implements desired.Admitter.
func (c *Controller) AdmissionKinds() []string { return []string{KindAdmission} }

// Admissions implements desired.Admitter.
func (c *Controller) Admissions(tx store.Tx) (map[desired.Ref]*desired.Admission, error) {
	sos, err := tx.List(KindAdmission, "")
	if err != nil {
		return nil, err
	}
	out := make(map[desired.Ref]*desired.Admission, len(sos))
	for _, so := range sos {
		if so.Namespace == ClusterDeploymentsNamespace {
			if so.Name == ClusterDeploymentsName {
				if err := cdAdmissions(so.Value, out); err != nil {
					return nil, err
				}
			}
			continue
		}
		var a admission
		if err := json.Unmarshal(so.Value, &a); err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", KindAdmission, so.Namespace, so.Name, err)
		}
		adm := &desired.Admission{Specs: map[uint64]*objects.MultiClusterService{}, Clusters: a.Clusters}
		for name, st := range a.Staged {
			if adm.Staged == nil {
				adm.Staged = map[string]desired.Staging{}
			}
			adm.Staged[name] = desired.Staging{Revision: st.Revision, Windows: st.Windows}
		}
		for rev, spec := range a.Specs {
			o := &objects.MultiClusterService{Spec: spec}
			o.APIVersion, o.Kind = objects.APIVersion, objects.KindMultiClusterService
			o.Metadata.Namespace, o.Metadata.Name, o.Metadata.CreateRevision = so.Namespace, so.Name, a.CreateRevision
			adm.Specs[rev] = o
		}
		out[desired.Ref{Kind: objects.KindMultiClusterService, Namespace: so.Namespace, Name: so.Name}] = adm
	}
	return out, nil
}

type storedRecord struct {
	rec *Record
	rv  uint64
	raw []byte
}

// snapshot is what one Reconcile reads, in one transaction.
type snapshot struct {
	mcs        []*objects.MultiClusterService
	cds        []*objects.ClusterDeployment // read only with a hub-wide policy
	clusters   []clusterView
	records    map[string]storedRecord // "ns/name"
	admissions map[string]storedRecord // raw + rv only
	desired    map[string]*desired.State
	reports    map[string]*reports.Report
}

func (c *Controller) read(ctx context.Context) (*snapshot, error) {
	snap := &snapshot{records: map[string]storedRecord{}, admissions: map[string]storedRecord{}, desired: map[string]*desired.State{}, reports: map[string]*reports.Report{}}
	err := c.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		sos, err := tx.List(objects.KindMultiClusterService, "")
		if err != nil {
			return err
		}
		for _, so := range sos {
			o, err := c.kinds.FromStored(so.Kind, so.Value, so.ResourceVersion, so.CreateRevision)
			if err != nil {
				return fmt.Errorf("%s %s/%s: %w", so.Kind, so.Namespace, so.Name, err)
			}
			snap.mcs = append(snap.mcs, o.(*objects.MultiClusterService))
		}
		for _, k := range []string{KindRollout, KindAdmission} {
			if sos, err = tx.List(k, ""); err != nil {
				return err
			}
			for _, so := range sos {
				sr := storedRecord{rv: so.ResourceVersion, raw: so.Value}
				if k == KindRollout {
					sr.rec = &Record{}
					if err := json.Unmarshal(so.Value, sr.rec); err != nil {
						return fmt.Errorf("%s %s/%s: %w", k, so.Namespace, so.Name, err)
					}
					snap.records[so.Namespace+"/"+so.Name] = sr
				} else {
					snap.admissions[so.Namespace+"/"+so.Name] = sr
				}
			}
		}
		if c.cdPolicy != nil {
			if sos, err = tx.List(objects.KindClusterDeployment, ""); err != nil {
				return err
			}
			for _, so := range sos {
				o, err := c.kinds.FromStored(so.Kind, so.Value, so.ResourceVersion, so.CreateRevision)
				if err != nil {
					return fmt.Errorf("%s %s/%s: %w", so.Kind, so.Namespace, so.Name, err)
				}
				snap.cds = append(snap.cds, o.(*objects.ClusterDeployment))
			}
		}
		managed := len(snap.records) > 0 || c.cdPolicy != nil
		for _, o := range snap.mcs {
			managed = managed || o.Spec.Rollout != nil
		}
		if !managed {
			return nil // no rollout: nothing else to read (most hubs, most of the time)
		}
		if sos, err = tx.List(kindCluster, ""); err != nil {
			return err
		}
		for _, so := range sos {
			var cl struct {
				Labels map[string]string `json:"labels"`
			}
			if err := json.Unmarshal(so.Value, &cl); err != nil {
				return fmt.Errorf("cluster %s: %w", so.Name, err)
			}
			snap.clusters = append(snap.clusters, clusterView{Name: so.Name, Labels: cl.Labels})
		}
		if sos, err = tx.List(desired.KindDesiredState, ""); err != nil {
			return err
		}
		for _, so := range sos {
			var st desired.State
			if err := json.Unmarshal(so.Value, &st); err != nil {
				return fmt.Errorf("DesiredState %s: %w", so.Name, err)
			}
			snap.desired[so.Name] = &st
		}
		if sos, err = tx.List(reports.Kind, ""); err != nil {
			return err
		}
		for _, so := range sos {
			var rep reports.Report
			if err := json.Unmarshal(so.Value, &rep); err != nil {
				return fmt.Errorf("%s %s: %w", reports.Kind, so.Name, err)
			}
			snap.reports[so.Name] = &rep
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rollout: read: %w", err)
	}
	return snap, nil
}

// health reads whether cluster has the services of ref, as its desired
// state holds them, Deployed at their revision.
func (snap *snapshot) health(cluster string, ref desired.Ref) (health, string) {
	st := snap.desired[cluster]
	rep := snap.reports[cluster]
	if st == nil {
		return healthUnknown, ""
	}
	for _, s := range st.Services {
		if s.Source != ref {
			continue
		}
		if rep == nil {
			return healthUnknown, ""
		}
		i := slices.IndexFunc(rep.Services, func(r reports.Service) bool { return r.Name == s.Name && r.Namespace == s.Namespace })
		if i < 0 || rep.Services[i].Revision < s.Revision {
			return healthUnknown, ""
		}
		r := rep.Services[i]
		if r.State == stateOK && r.LastDeployedHash != "" && s.ValuesHash != "" && r.LastDeployedHash != s.ValuesHash && s.SyncMode != syncOneTime {
			return healthUnknown, "" // still Deployed with what it had (a report from mid-apply)
		}
		switch r.State {
		case stateOK:
		case stateFailed:
			return healthFailed, fmt.Sprintf("service %s: Failed: %s", s.Key(), r.Message)
		default:
			return healthUnknown, ""
		}
	}
	return healthDeployed, ""
}

func (snap *snapshot) hasServices(cluster string, ref desired.Ref) bool {
	st := snap.desired[cluster]
	return st != nil && slices.ContainsFunc(st.Services, func(s desired.Service) bool { return s.Source == ref })
}

type write struct {
	key       string
	rec       *Record // nil: delete
	rv        uint64
	admitted  []string
	adm       []byte // nil: delete
	admRV     uint64
	admExists bool
	admChange bool
	recChange bool
}

// Reconcile advances every rollout once and stores what changed. It
// returns when it next needs to run with no change (zero: only on one).
func (c *Controller) Reconcile(ctx context.Context) (time.Time, error) {
	for attempt := 0; ; attempt++ {
		wake, err := c.reconcileOnce(ctx)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue // a console operation wrote a record meanwhile
		}
		return wake, err
	}
}

func (c *Controller) reconcileOnce(ctx context.Context) (time.Time, error) {
	snap, err := c.read(ctx)
	if err != nil {
		return time.Time{}, err
	}
	now := c.cfg.Now().UTC()
	var compiled uint64 = ^uint64(0)
	if c.cfg.Compiled != nil {
		compiled = c.cfg.Compiled()
	}
	var wake time.Time
	var writes []write
	live := map[string]bool{}
	for _, o := range snap.mcs {
		if o.Spec.Rollout == nil {
			continue
		}
		key := o.Metadata.Namespace + "/" + o.Metadata.Name
		live[key] = true
		ref := desired.Ref{Kind: objects.KindMultiClusterService, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name}
		p, err := compilePolicy(o.Spec.Rollout)
		if err != nil {
			c.log.Warn("rollout policy not usable", "mcs", key, "err", err)
			continue
		}
		sr := snap.records[key]
		rec := sr.rec
		hash := contentHash(&o.Spec)
		if rec == nil {
			rec = &Record{Version: recordVersion, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Clusters: map[string]*ClusterStatus{}}
			rec.beginRevision(uint64(o.Metadata.Generation), hash, o.Spec, now)
			// Clusters that have its services already got them before the
			// policy existed: they are in progress with this revision.
			for _, v := range snap.clusters {
				if snap.hasServices(v.Name, ref) {
					rec.Clusters[v.Name] = &ClusterStatus{State: Progressing, Since: now, Admitted: rec.Revision, Listed: true,
						Reason: "had these services before the rollout policy was set"}
				}
			}
		} else if last := rec.History[len(rec.History)-1]; last.Hash != hash {
			rec.beginRevision(max(uint64(o.Metadata.Generation), rec.Revision+1), hash, o.Spec, now)
		}
		views := slices.Clone(snap.clusters)
		for i := range views {
			v := &views[i]
			v.Online = c.cfg.Online == nil || c.cfg.Online(v.Name)
			v.HasServices = snap.hasServices(v.Name, ref)
			if s := rec.Clusters[v.Name]; s != nil && s.Listed && s.AdmittedAt <= compiled {
				v.Health, v.Message = snap.health(v.Name, ref)
			}
		}
		spec := rec.revision(rec.Revision).Spec
		admitted, w := rec.step(p, &spec, views, now)
		rec.pruneHistory()
		if !w.IsZero() && (wake.IsZero() || w.Before(wake)) {
			wake = w
		}
		wr := write{key: key, rec: rec, rv: sr.rv, admitted: admitted}
		b, _ := json.Marshal(rec)
		wr.recChange = !bytes.Equal(b, sr.raw) || len(admitted) > 0
		adm := rec.admission(o.Metadata.CreateRevision)
		sa, ok := snap.admissions[key]
		wr.adm, wr.admRV, wr.admExists = adm, sa.rv, ok
		wr.admChange = !ok || !bytes.Equal(adm, sa.raw)
		if wr.recChange || wr.admChange {
			writes = append(writes, wr)
		}
	}
	if w, cdWake := c.reconcileCDs(snap, now, compiled); w != nil || !cdWake.IsZero() {
		if w != nil {
			writes = append(writes, *w)
		}
		if !cdWake.IsZero() && (wake.IsZero() || cdWake.Before(wake)) {
			wake = cdWake
		}
	}
	live[cdKey] = true // reconcileCDs owns it
	for key, sr := range snap.records {
		if !live[key] {
			a := snap.admissions[key]
			writes = append(writes, write{key: key, rv: sr.rv, admRV: a.rv, admExists: a.raw != nil, recChange: true, admChange: true})
		}
	}
	if len(writes) == 0 {
		return wake, nil
	}
	err = c.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		rev := tx.Revision() + 1
		for _, w := range writes {
			ns, name, _ := strings.Cut(w.key, "/")
			if w.rec == nil {
				if err := tx.Delete(KindRollout, ns, name, w.rv); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				if w.admExists {
					if err := tx.Delete(KindAdmission, ns, name, w.admRV); err != nil && !errors.Is(err, store.ErrNotFound) {
						return err
					}
				}
				continue
			}
			for _, n := range w.admitted {
				w.rec.Clusters[n].AdmittedAt = rev
			}
			if w.recChange {
				b, err := json.Marshal(w.rec)
				if err != nil {
					return err
				}
				if err := put(tx, store.Object{Kind: KindRollout, Namespace: ns, Name: name, Value: b, ResourceVersion: w.rv}); err != nil {
					return err
				}
			}
			if w.admChange {
				if err := put(tx, store.Object{Kind: KindAdmission, Namespace: ns, Name: name, Value: w.adm, ResourceVersion: w.admRV}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("rollout: write: %w", err)
	}
	return wake, nil
}

// put creates an object (ResourceVersion 0) or updates it at its
// expected version.
func put(tx store.Tx, o store.Object) error {
	var err error
	if o.ResourceVersion == 0 {
		_, err = tx.Create(o)
	} else {
		_, err = tx.Update(o)
	}
	return err
}

// admission is the stored admission of rec.
func (r *Record) admission(createRev uint64) []byte {
	a := admission{CreateRevision: createRev, Specs: map[uint64]objects.MultiClusterServiceSpec{}, Clusters: map[string]uint64{}}
	for name, s := range r.Clusters {
		if !s.Listed {
			continue
		}
		a.Clusters[name] = s.Admitted
		if h := r.revision(s.Admitted); h != nil {
			a.Specs[s.Admitted] = h.Spec
		}
	}
	for name, s := range r.Clusters {
		if s.State != Staged || s.StagedRev == 0 {
			continue
		}
		if h := r.revision(s.StagedRev); h != nil {
			a.Specs[s.StagedRev] = h.Spec
			if a.Staged == nil {
				a.Staged = map[string]stagedAdmission{}
			}
			a.Staged[name] = stagedAdmission{Revision: s.StagedRev, Windows: s.Windows}
		}
	}
	b, _ := json.Marshal(a) // map keys sorted: stable bytes
	return b
}
