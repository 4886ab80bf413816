package rollout

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tetherfleet/tether/hub/internal/desired"
	"github.com/tetherfleet/tether/hub/internal/objects"
)

// The hub-wide rollout of ClusterDeployment changes.
//
// Each ClusterDeployment is a stream of revisions for one cluster (the
// one named after it): a revision is its generation at which
// spec.serviceSpec changed. One policy (Config.ClusterDeploymentRollout)
// governs every stream, as one Record whose clusters are the
// ClusterDeployments, so maxConcurrency, stages, windows, the offline
// policy and the failure budget bound the whole fleet's pending changes
// together. advance (plan.go) does the work, as for an MCS; this file
// turns ClusterDeployments into its views.
//
// Waves. Changes do not come as one revision, so the Record's Revision
// counts waves: a change arriving while no cluster is Pending,
// Progressing or Staged and the phase is Complete starts a new wave
// (fresh failure budget, approvals and stages from the first); a change
// arriving while one is under way joins it; while Halted or RolledBack
// it joins and waits for `tether rollout resume clusterdeployments`.
// maxFailures and percent maxConcurrency count the clusters of the
// current wave.

// maxCDHistory bounds a ClusterDeployment's revisions kept that its
// cluster is not admitted to.
const maxCDHistory = 5

// cdAdmission is the stored KindAdmission of the hub-wide rollout:
// every ClusterDeployment it tracks, by "namespace/name". One not
// listed here (just applied) keeps what its cluster has while the
// policy is gradual (desired.Admitter.GatesClusterDeployments).
type cdAdmission struct {
	ClusterDeployments map[string]cdAdmitted `json:"clusterDeployments"`
}

type cdAdmitted struct {
	Cluster string `json:"cluster"`
	// Listed: the cluster is admitted to Revision (0: none of the
	// services); not listed: it keeps what it has.
	Listed   bool                           `json:"listed,omitempty"`
	Revision uint64                         `json:"revision,omitempty"`
	Specs    map[uint64]objects.ServiceSpec `json:"specs,omitempty"`
	Staged   *stagedAdmission               `json:"staged,omitempty"`
}

// cdKey is the store key of the hub-wide rollout's pair.
const cdKey = ClusterDeploymentsNamespace + "/" + ClusterDeploymentsName

// serviceHash identifies what a ClusterDeployment revision deploys.
func serviceHash(spec *objects.ServiceSpec) string {
	b, _ := json.Marshal(spec)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

func cdRef(namespace, name string) desired.Ref {
	return desired.Ref{Kind: objects.KindClusterDeployment, Namespace: namespace, Name: name}
}

// GatesClusterDeployments implements desired.Admitter: with a gradual
// hub-wide policy, a ClusterDeployment the controller has not admitted
// yet keeps what its cluster has.
func (c *Controller) GatesClusterDeployments() bool {
	r := c.cfg.ClusterDeploymentRollout
	return r != nil && r.Strategy != "" && r.Strategy != objects.RolloutAll
}

// reconcileCDs advances the hub-wide rollout once; nil: nothing to
// write.
func (c *Controller) reconcileCDs(snap *snapshot, now time.Time, compiled uint64) (*write, time.Time) {
	sr := snap.records[cdKey]
	sa, admExists := snap.admissions[cdKey]
	if c.cdPolicy == nil {
		if sr.rec == nil && !admExists {
			return nil, time.Time{}
		}
		// The flag was dropped: ClusterDeployment changes apply at once.
		return &write{key: cdKey, rv: sr.rv, admRV: sa.rv, admExists: admExists, recChange: true, admChange: true}, time.Time{}
	}
	rec := sr.rec
	if rec == nil {
		rec = &Record{Version: recordVersion, Scope: ScopeClusterDeployments, Namespace: ClusterDeploymentsNamespace, Name: ClusterDeploymentsName,
			Phase: PhaseComplete, Started: now}
	}
	if rec.Clusters == nil {
		rec.Clusters = map[string]*ClusterStatus{}
	}
	if rec.Streams == nil {
		rec.Streams = map[string][]RevisionRecord{}
	}
	labels := map[string]map[string]string{}
	for _, v := range snap.clusters {
		labels[v.Name] = v.Labels
	}
	idle := true
	for _, s := range rec.Clusters {
		if s.State == Pending || s.State == Progressing || s.State == Staged {
			idle = false
		}
	}
	var fresh []*ClusterStatus // a new revision to roll out
	var views []clusterView
	for _, o := range snap.cds {
		cl := o.Metadata.Name
		l, enrolled := labels[cl]
		if !enrolled {
			continue // no cluster yet: nothing to roll out to (its entry goes)
		}
		k := o.Metadata.Namespace + "/" + o.Metadata.Name
		ref := cdRef(o.Metadata.Namespace, o.Metadata.Name)
		hash := serviceHash(&o.Spec.ServiceSpec)
		hist := rec.Streams[k]
		s := rec.Clusters[k]
		rev := uint64(o.Metadata.Generation)
		if len(hist) > 0 {
			rev = max(rev, hist[len(hist)-1].Revision+1)
		}
		add := func() {
			if n := len(hist); n > 0 && hist[n-1].Outcome == "" {
				hist[n-1].Outcome = fmt.Sprintf("Superseded by revision %d", rev)
			}
			hist = append(hist, RevisionRecord{Revision: rev, Hash: hash, Created: now,
				Spec: objects.MultiClusterServiceSpec{ServiceSpec: o.Spec.ServiceSpec}})
		}
		switch {
		case s == nil:
			if len(hist) == 0 || hist[len(hist)-1].Hash != hash {
				add()
			}
			s = &ClusterStatus{Cluster: cl, Target: hist[len(hist)-1].Revision, State: Pending, Since: now}
			if snap.hasServices(cl, ref) {
				// Its cluster had these services before the policy
				// governed it: taken as they are, not rolled out again.
				s.State, s.Admitted, s.Listed, s.Succeeded = Succeeded, s.Target, true, s.Target
				s.Reason = "had these services before the hub-wide rollout policy was set"
			} else {
				fresh = append(fresh, s)
			}
			rec.Clusters[k] = s
		case len(hist) == 0 || hist[len(hist)-1].Hash != hash:
			add()
			// Supersede, for this cluster: back to Pending for the new
			// revision, keeping the one it is admitted to.
			s.Target = rev
			s.State, s.Reason, s.Since, s.HealthySince, s.StagedRev, s.Windows = Pending, "", now, time.Time{}, 0, nil
			fresh = append(fresh, s)
		}
		rec.Streams[k] = hist
		v := clusterView{Name: k, Labels: l, Member: true, Target: s.Target, HasServices: snap.hasServices(cl, ref)}
		v.Online = c.cfg.Online == nil || c.cfg.Online(cl)
		if s.Listed && s.AdmittedAt <= compiled {
			v.Health, v.Message = snap.health(cl, ref)
		}
		views = append(views, v)
	}
	if len(fresh) > 0 {
		if idle && rec.Phase == PhaseComplete {
			rec.Revision++
			rec.Approved, rec.Forgiven, rec.Started, rec.Stages, rec.Reason = nil, 0, now, nil, ""
			rec.Phase = PhaseProgressing
			for _, s := range rec.Clusters {
				if s.State == Deferred {
					s.Wave = rec.Revision // catching up: counts in this wave
				}
			}
		}
		for _, s := range fresh {
			s.Wave = rec.Revision
		}
	}
	admitted, wake := rec.advance(c.cdPolicy, views, now)
	rec.pruneStreams()

	wr := &write{key: cdKey, rec: rec, rv: sr.rv, admitted: admitted}
	b, _ := json.Marshal(rec)
	wr.recChange = !bytes.Equal(b, sr.raw) || len(admitted) > 0
	adm := rec.cdAdmission()
	wr.adm, wr.admRV, wr.admExists = adm, sa.rv, admExists
	wr.admChange = !admExists || !bytes.Equal(adm, sa.raw)
	if !wr.recChange && !wr.admChange {
		return nil, wake
	}
	return wr, wake
}

// pruneStreams drops the revisions of ClusterDeployments no longer
// tracked, and each one's oldest revisions its cluster does not use.
func (r *Record) pruneStreams() {
	for k, hist := range r.Streams {
		s := r.Clusters[k]
		if s == nil {
			delete(r.Streams, k)
			continue
		}
		used := map[uint64]bool{s.Target: true, s.Admitted: true, s.Before: true, s.StagedRev: true}
		keepFrom := len(hist) - maxCDHistory
		r.Streams[k] = slices.DeleteFunc(hist, func(h RevisionRecord) bool {
			keepFrom--
			return keepFrom >= 0 && !used[h.Revision]
		})
	}
}

// streamRevision is revision n of ClusterDeployment k.
func (r *Record) streamRevision(k string, n uint64) *RevisionRecord {
	hist := r.Streams[k]
	for i := range hist {
		if hist[i].Revision == n {
			return &hist[i]
		}
	}
	return nil
}

// cdAdmission is the stored admission of the hub-wide rollout.
func (r *Record) cdAdmission() []byte {
	a := cdAdmission{ClusterDeployments: map[string]cdAdmitted{}}
	for k, s := range r.Clusters {
		e := cdAdmitted{Cluster: s.Cluster, Listed: s.Listed, Revision: s.Admitted, Specs: map[uint64]objects.ServiceSpec{}}
		if !s.Listed {
			e.Revision = 0
		} else if h := r.streamRevision(k, s.Admitted); h != nil {
			e.Specs[s.Admitted] = h.Spec.ServiceSpec
		}
		if s.State == Staged && s.StagedRev != 0 {
			if h := r.streamRevision(k, s.StagedRev); h != nil {
				e.Specs[s.StagedRev] = h.Spec.ServiceSpec
				e.Staged = &stagedAdmission{Revision: s.StagedRev, Windows: s.Windows}
			}
		}
		a.ClusterDeployments[k] = e
	}
	b, _ := json.Marshal(a) // map keys sorted: stable bytes
	return b
}

// cdAdmissions turns the stored admission into the compiler's, one per
// ClusterDeployment.
func cdAdmissions(raw []byte, out map[desired.Ref]*desired.Admission) error {
	var a cdAdmission
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("%s %s: %w", KindAdmission, cdKey, err)
	}
	for k, e := range a.ClusterDeployments {
		ns, name, ok := cutKey(k)
		if !ok {
			return fmt.Errorf("%s %s: bad key %q", KindAdmission, cdKey, k)
		}
		adm := &desired.Admission{Specs: map[uint64]*objects.MultiClusterService{}, Clusters: map[string]uint64{}}
		for rev, spec := range e.Specs {
			o := &objects.MultiClusterService{Spec: objects.MultiClusterServiceSpec{ServiceSpec: spec}}
			o.APIVersion, o.Kind = objects.APIVersion, objects.KindMultiClusterService
			o.Metadata.Namespace, o.Metadata.Name = ns, name
			adm.Specs[rev] = o
		}
		if e.Listed {
			adm.Clusters[e.Cluster] = e.Revision
		}
		if e.Staged != nil {
			adm.Staged = map[string]desired.Staging{e.Cluster: {Revision: e.Staged.Revision, Windows: e.Staged.Windows}}
		}
		out[cdRef(ns, name)] = adm
	}
	return nil
}

func cutKey(k string) (string, string, bool) {
	ns, name, ok := strings.Cut(k, "/")
	return ns, name, ok && ns != "" && name != ""
}
