package objects

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tetherfleet/tether/hub/internal/store"
)

// Store is the part of the hub store the repository uses.
type Store interface {
	Get(ctx context.Context, kind, namespace, name string) (store.Object, error)
	List(ctx context.Context, kind, namespace string) ([]store.Object, error)
	Txn(ctx context.Context, fn func(tx store.Tx) error) error
}

// RepoConfig configures a Repo.
type RepoConfig struct {
	Store Store
	// Now is the clock for creationTimestamp; nil means time.Now.
	Now func() time.Time
	// SystemNamespaces hold ServiceTemplates every namespace may use;
	// nil means DefaultSystemNamespaces().
	SystemNamespaces []string
	// Kinds are the kinds the repository stores; nil means DefaultKinds().
	Kinds *Registry
}

// Repo reads and writes API objects in the hub store, as JSON under
// (kind, namespace, name). metadata.resourceVersion and the creation
// revision come from the store record and are not part of the value.
type Repo struct {
	cfg RepoConfig
}

// NewRepo returns a Repo.
func NewRepo(cfg RepoConfig) (*Repo, error) {
	if cfg.Store == nil {
		return nil, errors.New("objects: RepoConfig.Store is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SystemNamespaces == nil {
		cfg.SystemNamespaces = DefaultSystemNamespaces()
	}
	if cfg.Kinds == nil {
		cfg.Kinds = builtinKinds()
	}
	return &Repo{cfg: cfg}, nil
}

// Kinds returns the kinds the repository stores.
func (r *Repo) Kinds() *Registry { return r.cfg.Kinds }

// kind returns the registered kind, or an error wrapping ErrUnknownKind
// that begins with op.
func (r *Repo) kind(op, kind string) (*Kind, error) {
	if k := r.cfg.Kinds.Get(kind); k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("%s %s: %w", op, kind, ErrUnknownKind)
}

// Action says what Apply did with one object.
type Action string

// Actions.
const (
	Created    Action = "created"
	Configured Action = "configured"
	Unchanged  Action = "unchanged"
)

// Result is the outcome of applying one object.
type Result struct {
	Kind, Namespace, Name string
	Action                Action
	Generation            int64
	ResourceVersion       uint64
	// Object is the object as stored (or, in a dry run, as it would be
	// stored): defaulted, with the stored status and metadata.
	Object Object
	// Live is the stored object before the apply; nil when Action is
	// Created.
	Live Object
}

// ApplyOptions change what Apply does.
type ApplyOptions struct {
	// DryRun runs the whole apply (defaulting, validation, reference and
	// chain checks, the writes) in the store transaction and then rolls
	// it back: the results say what would happen and nothing is stored.
	DryRun bool
}

// errDryRun rolls back a dry run's transaction.
var errDryRun = errors.New("dry run: rolled back")

// String is kubectl's form, e.g. "servicetemplate/nginx created".
func (r Result) String() string {
	return fmt.Sprintf("%s/%s %s", strings.ToLower(r.Kind), r.Name, r.Action)
}

// Apply creates or updates objs in one store transaction: all or nothing.
// Each object is defaulted and validated; references are checked against
// the store and the batch (every Ref of the object's kind: a
// ServiceTemplate's HelmRepository unless it is "tether-local"; every
// ServiceTemplate a serviceSpec names). Status in
// input is ignored and an existing status kept; metadata.generation grows
// only when the spec changes; an object equal to the stored one is not
// written. A service that names a templateChain is checked against that
// ServiceTemplateChain (see checkChains). Results are in input order.
// Errors are *ObjectError values (joined), wrapping ErrInvalid.
func (r *Repo) Apply(ctx context.Context, objs []Object) ([]Result, error) {
	return r.ApplyWith(ctx, objs, ApplyOptions{})
}

// ApplyWith is Apply with options: with DryRun nothing is stored and the
// store revision does not move, but the results and errors are the ones
// Apply would return.
func (r *Repo) ApplyWith(ctx context.Context, objs []Object, opts ApplyOptions) ([]Result, error) {
	batch := make([]Object, len(objs))
	index := map[string]Object{}
	var errs []error
	for i, o := range objs {
		if o == nil || r.cfg.Kinds.Get(o.GetHeader().Kind) == nil {
			kind := ""
			if o != nil {
				kind = o.GetHeader().Kind
			}
			errs = append(errs, &ObjectError{Kind: kind, Err: fmt.Errorf("%w %q (known: %s)", ErrUnknownKind, kind, strings.Join(r.cfg.Kinds.sortedNames(), ", "))})
			continue
		}
		c, err := deepCopy(o)
		if err != nil {
			errs = append(errs, &ObjectError{Kind: o.GetHeader().Kind, Err: err})
			continue
		}
		r.cfg.Kinds.Default(c)
		if err := r.cfg.Kinds.Validate(c); err != nil {
			errs = append(errs, err)
			continue
		}
		h := c.GetHeader()
		if _, dup := index[h.Key()]; dup {
			errs = append(errs, &ObjectError{Kind: h.Kind, Key: h.nsName(), Err: errors.New("listed twice")})
			continue
		}
		index[h.Key()] = c
		batch[i] = c
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	results := make([]Result, len(batch))
	err := r.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		var errs []error
		v := r.view(tx, index)
		for _, o := range batch {
			fe, err := r.checkRefs(v, o)
			if err != nil {
				return err
			}
			if len(fe) == 0 {
				fe = r.checkChains(v, o)
			}
			if len(fe) > 0 {
				h := o.GetHeader()
				errs = append(errs, &ObjectError{Kind: h.Kind, Key: h.nsName(), Fields: fe})
			}
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		var written []int
		for i, o := range batch {
			res, err := r.applyOne(tx, o)
			if err != nil {
				return err
			}
			results[i] = res
			if res.Action != Unchanged {
				written = append(written, i)
			}
		}
		if err := r.checkAccessChange(tx, batch); err != nil {
			return err
		}
		for _, i := range written {
			if !opts.DryRun {
				results[i].ResourceVersion = tx.Revision()
			}
			results[i].Object.GetHeader().Metadata.ResourceVersion = Revision(results[i].ResourceVersion)
		}
		if opts.DryRun {
			return errDryRun
		}
		return nil
	})
	if err != nil && !errors.Is(err, errDryRun) {
		return nil, err
	}
	return results, nil
}

func (r *Repo) applyOne(tx store.Tx, o Object) (Result, error) {
	h := o.GetHeader()
	md := &h.Metadata
	res := Result{Kind: h.Kind, Namespace: md.Namespace, Name: md.Name, Object: o}
	k := r.cfg.Kinds.Get(h.Kind)
	k.clearStatus(o)
	md.ResourceVersion, md.CreateRevision = 0, 0
	cur, err := tx.Get(h.Kind, md.Namespace, md.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		now := r.cfg.Now().UTC().Truncate(time.Second)
		md.Generation = 1
		md.CreationTimestamp = &now
		md.UID = newUID()
		v, err := json.Marshal(o)
		if err != nil {
			return res, fmt.Errorf("apply %s: %w", h.Key(), err)
		}
		if _, err := tx.Create(store.Object{Kind: h.Kind, Namespace: md.Namespace, Name: md.Name, Value: v}); err != nil {
			return res, fmt.Errorf("apply %s: %w", h.Key(), err)
		}
		res.Action, res.Generation = Created, 1
		return res, nil
	case err != nil:
		return res, fmt.Errorf("apply %s: %w", h.Key(), err)
	}
	old, err := r.cfg.Kinds.FromStored(h.Kind, cur.Value, cur.ResourceVersion, cur.CreateRevision)
	if err != nil {
		return res, fmt.Errorf("apply %s: %w", h.Key(), err)
	}
	res.Live = old
	om := old.GetHeader().Metadata
	md.UID, md.CreationTimestamp, md.Generation = om.UID, om.CreationTimestamp, om.Generation
	k.copyStatus(o, old)
	specChanged := !jsonEqual(k.spec(o), k.spec(old))
	if specChanged {
		md.Generation++
	}
	res.Generation = md.Generation
	md.CreateRevision = om.CreateRevision
	if !specChanged && mapsEqual(md.Labels, om.Labels) && mapsEqual(md.Annotations, om.Annotations) {
		res.Action, res.ResourceVersion = Unchanged, cur.ResourceVersion
		md.ResourceVersion = om.ResourceVersion
		return res, nil
	}
	v, err := json.Marshal(o)
	if err != nil {
		return res, fmt.Errorf("apply %s: %w", h.Key(), err)
	}
	if _, err := tx.Update(store.Object{Kind: h.Kind, Namespace: md.Namespace, Name: md.Name, Value: v, ResourceVersion: cur.ResourceVersion}); err != nil {
		return res, fmt.Errorf("apply %s: %w", h.Key(), err)
	}
	res.Action = Configured
	return res, nil
}

// checkRefs checks that the objects o names exist in the view.
func (r *Repo) checkRefs(v *view, o Object) (FieldErrors, error) {
	var errs FieldErrors
	k := r.cfg.Kinds.Get(o.GetHeader().Kind)
	if k.refs == nil {
		return nil, nil
	}
	ns := o.GetHeader().Metadata.Namespace
	for _, ref := range k.refs(o) {
		rk := r.cfg.Kinds.Get(ref.Kind)
		switch {
		case rk == nil || !slices.Contains(k.references, ref.Kind):
			errs.Add(ref.Field, "%s is not a kind %s may reference", ref.Kind, k.name)
		case slices.Contains(rk.builtin, ref.Name):
		case rk.clusterScoped:
			if !v.exists(rk.name, "", ref.Name) {
				errs.Add(ref.Field, "%s %s not found", rk.name, ref.Name)
			}
		case rk.shared:
			_, ok, err := r.resolve(v, rk, ns, ref.Name)
			if err != nil {
				return nil, err
			}
			if !ok {
				errs.Add(ref.Field, "%s", r.notFound(v, rk, ns, ref.Name))
			}
		default:
			if !v.exists(rk.name, ns, ref.Name) {
				errs.Add(ref.Field, "%s %s/%s not found", rk.name, ns, ref.Name)
			}
		}
	}
	return errs, nil
}

// notFound says why a kind shared from the system namespaces is not
// found from namespace ns.
func (r *Repo) notFound(v *view, k *Kind, ns, name string) string {
	if acc, err := v.accessOf(); err == nil {
		for _, sys := range r.cfg.SystemNamespaces {
			if v.exists(k.name, sys, name) {
				if why := acc.NotVisible(k.name, ns, name); why != "" {
					return why
				}
			}
		}
	}
	return fmt.Sprintf("%s %s not found in namespace %s or the system namespaces (%s)", k.name, name, ns, strings.Join(r.cfg.SystemNamespaces, ", "))
}

// resolve returns the namespace whose object of kind k named name an
// object in namespace ns refers to: its own; for kinds shared from the
// system namespaces, else the first system namespace that has one, as
// far as AccessManagement lets ns see it (Access.Resolve); none for
// cluster-scoped kinds.
func (r *Repo) resolve(v *view, k *Kind, ns, name string) (string, bool, error) {
	if k.clusterScoped {
		return "", v.exists(k.name, "", name), nil
	}
	if !k.shared {
		return ns, v.exists(k.name, ns, name), nil
	}
	acc, err := v.accessOf()
	if err != nil {
		return "", false, err
	}
	at, ok := acc.Resolve(k.name, ns, name, func(n string) bool { return v.exists(k.name, n, name) }, func(n string) map[string]string {
		if o := v.get(k.name, n, name); o != nil {
			return o.GetHeader().Metadata.Labels
		}
		return nil
	})
	return at, ok, nil
}

// Get returns one object; namespace "" means "default" (and is ignored
// for cluster-scoped kinds).
func (r *Repo) Get(ctx context.Context, kind, namespace, name string) (Object, error) {
	k, err := r.kind("get", kind)
	if err != nil {
		return nil, err
	}
	namespace = k.namespaceFor(namespace)
	so, err := r.cfg.Store.Get(ctx, kind, namespace, name)
	if err != nil {
		return nil, fmt.Errorf("get %s %s/%s: %w", kind, namespace, name, err)
	}
	return r.cfg.Kinds.FromStored(kind, so.Value, so.ResourceVersion, so.CreateRevision)
}

// List returns a kind's objects in namespace ("" = all), sorted by
// namespace then name.
func (r *Repo) List(ctx context.Context, kind, namespace string) ([]Object, error) {
	k, err := r.kind("list", kind)
	if err != nil {
		return nil, err
	}
	if k.clusterScoped {
		namespace = ""
	}
	sos, err := r.cfg.Store.List(ctx, kind, namespace)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	return r.decodeAll(kind, sos)
}

func (r *Repo) decodeAll(kind string, sos []store.Object) ([]Object, error) {
	out := make([]Object, 0, len(sos))
	for _, so := range sos {
		o, err := r.cfg.Kinds.FromStored(kind, so.Value, so.ResourceVersion, so.CreateRevision)
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", kind, so.Namespace, so.Name, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// Delete removes an object; namespace "" means "default". An object that
// others reference (a ServiceTemplate used by a ClusterDeployment or
// MultiClusterService, a HelmRepository used by a ServiceTemplate: every
// Ref of a registered kind) is not deleted: the error wraps ErrInUse and
// names the users.
func (r *Repo) Delete(ctx context.Context, kind, namespace, name string) error {
	k, err := r.kind("delete", kind)
	if err != nil {
		return err
	}
	namespace = k.namespaceFor(namespace)
	return r.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		if _, err := tx.Get(kind, namespace, name); err != nil {
			return fmt.Errorf("delete %s %s/%s: %w", kind, namespace, name, err)
		}
		users, err := r.usersOf(tx, k, namespace, name)
		if err != nil {
			return fmt.Errorf("delete %s %s/%s: %w", kind, namespace, name, err)
		}
		if len(users) > 0 {
			return fmt.Errorf("delete %s %s/%s: %w by %s", kind, namespace, name, ErrInUse, strings.Join(users, ", "))
		}
		if err := tx.Delete(kind, namespace, name, 0); err != nil {
			return err
		}
		if kind == KindServiceTemplateChain && slices.Contains(r.cfg.SystemNamespaces, namespace) {
			// Templates an AccessManagement rule distributes through the
			// chain are no longer seen where only the chain brought them.
			hidden, err := r.brokenUsers(tx)
			if err != nil {
				return fmt.Errorf("delete %s %s/%s: %w", kind, namespace, name, err)
			}
			if len(hidden) > 0 {
				return fmt.Errorf("delete %s %s/%s: %w (AccessManagement distributes its templates) by %s", kind, namespace, name, ErrInUse, strings.Join(hidden, "; "))
			}
		}
		return nil
	})
}

// usersOf lists the objects whose Refs resolve to k namespace/name, kind by
// kind in registration order.
func (r *Repo) usersOf(tx store.Tx, k *Kind, namespace, name string) ([]string, error) {
	// Objects of a kind shared from a system namespace serve every
	// namespace that has none of that name (nor an earlier system
	// namespace); cluster-scoped ones serve every namespace.
	scope := namespace
	if k.clusterScoped || (k.shared && slices.Contains(r.cfg.SystemNamespaces, namespace)) {
		scope = ""
	}
	var users []string
	v := r.view(tx, nil)
	for _, uk := range r.cfg.Kinds.kinds {
		if uk.refs == nil || !slices.Contains(uk.references, k.name) {
			continue
		}
		sos, err := tx.List(uk.name, scope)
		if err != nil {
			return nil, err
		}
		objs, err := r.decodeAll(uk.name, sos)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			resolved := false
			for _, ref := range uk.refs(o) {
				if ref.Kind != k.name || ref.Name != name {
					continue
				}
				if !resolved {
					used, _, err := r.resolve(v, k, o.GetHeader().Metadata.Namespace, name)
					if err != nil {
						return nil, err
					}
					if used != namespace {
						break // resolves to another namespace's object
					}
					resolved = true
				}
				user := o.GetHeader().Key()
				if ref.Use != "" {
					user += " (" + ref.Use + ")"
				}
				users = append(users, user)
			}
		}
	}
	return users, nil
}

// maxStatusRetries bounds UpdateStatus's compare-and-swap attempts.
const maxStatusRetries = 16

// UpdateStatus changes an object's status. mutate gets a fresh copy of the
// object and changes its Status (type-assert to the kind); anything else
// it changes is discarded. It runs outside the store lock and is called
// again if the object changed meanwhile (compare-and-swap on
// resourceVersion), so it must be repeatable. An unchanged status is not
// written. It returns the stored object.
func (r *Repo) UpdateStatus(ctx context.Context, kind, namespace, name string, mutate func(Object) error) (Object, error) {
	k := r.cfg.Kinds.Get(kind)
	if k != nil {
		namespace = k.namespaceFor(namespace)
	}
	for attempt := 0; ; attempt++ {
		cur, err := r.Get(ctx, kind, namespace, name)
		if err != nil {
			return nil, fmt.Errorf("update status: %w", err)
		}
		rv := uint64(cur.GetHeader().Metadata.ResourceVersion)
		mut := DeepCopy(cur)
		if err := mutate(mut); err != nil {
			return nil, fmt.Errorf("update status %s %s/%s: %w", kind, namespace, name, err)
		}
		if jsonEqual(k.statusOf(mut), k.statusOf(cur)) {
			return cur, nil
		}
		next := DeepCopy(cur)
		k.copyStatus(next, mut)
		md := &next.GetHeader().Metadata
		md.ResourceVersion = 0
		v, err := json.Marshal(next)
		if err != nil {
			return nil, fmt.Errorf("update status %s %s/%s: %w", kind, namespace, name, err)
		}
		err = r.cfg.Store.Txn(ctx, func(tx store.Tx) error {
			so, err := tx.Update(store.Object{Kind: kind, Namespace: namespace, Name: name, Value: v, ResourceVersion: rv})
			md.ResourceVersion = Revision(so.ResourceVersion)
			return err
		})
		if errors.Is(err, store.ErrConflict) && attempt < maxStatusRetries {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("update status %s %s/%s: %w", kind, namespace, name, err)
		}
		return next, nil
	}
}

func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
