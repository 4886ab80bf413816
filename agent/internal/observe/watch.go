package observe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// HelmManagedSelector selects the objects Helm created or adopted: Helm
// sets this label on every object of a release it installs or upgrades.
const HelmManagedSelector = "app.kubernetes.io/managed-by=Helm"

// Change is an event on an object of a watched release.
type Change struct {
	// Service is the release, "namespace/name".
	Service string
	// Object names the object: "Deployment ns/name".
	Object string
	// Deleted: the object is gone (or no longer labelled as Helm's).
	Deleted bool
	// Spec: more than the status changed (generation, labels,
	// annotations, deletion; any change of a kind without generation).
	// false: a status update only.
	Spec bool
}

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	// Observer reaches the cluster. Required.
	Observer *Observer
	// Records holds the releases' manifests. Required.
	Records Records
	// OnChange is called, from an informer's goroutine, for every update
	// or delete of a watched object; it must not block. Required.
	OnChange func(Change)
	// Logger. Default: discard.
	Logger *slog.Logger
}

// Validate reports a configuration that cannot work.
func (c *WatcherConfig) Validate() error {
	switch {
	case c.Observer == nil:
		return errors.New("observe watcher config: Observer is required")
	case c.Records == nil:
		return errors.New("observe watcher config: Records is required")
	case c.OnChange == nil:
		return errors.New("observe watcher config: OnChange is required")
	}
	return nil
}

// Watcher watches the objects of the releases it is told to (Watch), so
// their deletion or change is known at once, not at the next pass.
//
// It runs one informer per resource and namespace that the releases'
// recorded manifests name (client-go's tools/cache over the metadata
// client: object metadata only, managed fields dropped), each selecting
// only Helm's objects (HelmManagedSelector) and, when the manifests name
// one object of that resource there, only that name (a field selector).
// So memory follows what the agent manages, not what the cluster holds.
// Adds are not reported: an object appearing is not drift. When an
// informer's first list is in, each service it covers is reported once
// (Spec), for what changed before the watch began.
type Watcher struct {
	cfg WatcherConfig
	log *slog.Logger

	mu       sync.Mutex
	ctx      context.Context // set by Run
	services []string        // last Watch
	running  map[watchKey]*informer
	wg       sync.WaitGroup
}

// watchKey is one informer: a resource in a namespace ("" for
// cluster-scoped ones) with a field selector.
type watchKey struct {
	gvr       schema.GroupVersionResource
	namespace string
	fields    string
}

type informer struct {
	stop   context.CancelFunc
	byName map[string][]string // object name → services
	kind   string
	mu     sync.Mutex
}

// NewWatcher returns a watcher; nothing is watched before Run and Watch.
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, log: cfg.Logger, running: map[watchKey]*informer{}}, nil
}

// Run runs the informers until ctx is done, then stops them and waits.
func (w *Watcher) Run(ctx context.Context) error {
	w.mu.Lock()
	w.ctx = ctx
	svcs := w.services
	w.mu.Unlock()
	if err := w.Watch(ctx, svcs); err != nil {
		w.log.Warn("watch managed objects", "err", err)
	}
	<-ctx.Done()
	w.mu.Lock()
	for k, inf := range w.running {
		inf.stop()
		delete(w.running, k)
	}
	w.ctx = nil
	w.mu.Unlock()
	w.wg.Wait()
	return nil
}

// Informers returns how many informers run (for status and tests).
func (w *Watcher) Informers() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.running)
}

// Watch makes the watched set the objects of services ("namespace/name")
// as the newest recorded revision of each names them: informers no
// longer needed stop, new ones start. A release without a recorded
// manifest, or an object whose kind the cluster does not serve, is
// skipped (the periodic pass still covers it). Before Run it only
// remembers services.
func (w *Watcher) Watch(ctx context.Context, services []string) error {
	want := map[watchKey]map[string][]string{} // key → name → services
	kinds := map[watchKey]string{}
	var errs []error
	for _, svc := range services {
		ns, name, ok := strings.Cut(svc, "/")
		if !ok {
			continue
		}
		rec, err := w.cfg.Records.ReleaseRecord(ns, name)
		if err != nil {
			continue // not installed (yet)
		}
		rv, ok := rec.Latest()
		if !ok {
			continue
		}
		m, err := rv.Manifest()
		if err != nil {
			continue
		}
		objs, err := ParseManifest(m)
		if err != nil {
			errs = append(errs, fmt.Errorf("release %s: %w", svc, err))
			continue
		}
		byResource := map[watchKey][]string{}
		for _, o := range objs {
			mp, err := w.cfg.Observer.mapper.Map(ctx, o.GVK)
			if err != nil {
				if !errors.Is(err, ErrNoMatch) {
					errs = append(errs, fmt.Errorf("release %s: map %s: %w", svc, o.GVK, err))
				}
				continue
			}
			k := watchKey{gvr: mp.Resource}
			if mp.Namespaced {
				k.namespace = o.Namespace
				if k.namespace == "" {
					k.namespace = ns
				}
			}
			byResource[k] = append(byResource[k], o.Name)
			kinds[k] = o.GVK.Kind
		}
		for k, names := range byResource {
			if want[k] == nil {
				want[k] = map[string][]string{}
			}
			for _, n := range names {
				want[k][n] = append(want[k][n], svc)
			}
		}
	}
	// One name in a namespace: select it by field too.
	final := map[watchKey]map[string][]string{}
	for k, names := range want {
		if len(names) == 1 {
			for n := range names {
				k.fields = fields.OneTermEqualSelector("metadata.name", n).String()
			}
		}
		final[k] = names
		kinds[k] = kinds[watchKey{gvr: k.gvr, namespace: k.namespace}]
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	w.services = slices.Clone(services)
	if w.ctx == nil {
		return errors.Join(errs...)
	}
	for k, inf := range w.running {
		if _, ok := final[k]; !ok {
			inf.stop()
			delete(w.running, k)
		}
	}
	for k, names := range final {
		if inf, ok := w.running[k]; ok {
			inf.mu.Lock()
			inf.byName = names
			inf.mu.Unlock()
			continue
		}
		w.start(k, kinds[k], names)
	}
	return errors.Join(errs...)
}

// start runs an informer for k; w.mu is held.
func (w *Watcher) start(k watchKey, kind string, names map[string][]string) {
	ctx, cancel := context.WithCancel(w.ctx)
	inf := &informer{stop: cancel, byName: names, kind: kind}
	w.running[k] = inf
	res := w.cfg.Observer.metadata.Resource(k.gvr)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.LabelSelector, opts.FieldSelector = HelmManagedSelector, k.fields
			return res.Namespace(k.namespace).List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.LabelSelector, opts.FieldSelector = HelmManagedSelector, k.fields
			return res.Namespace(k.namespace).Watch(ctx, opts)
		},
	}
	si := cache.NewSharedIndexInformer(lw, &metav1.PartialObjectMetadata{}, 0, cache.Indexers{})
	_ = si.SetTransform(func(obj any) (any, error) {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
			m.ManagedFields = nil
		}
		return obj, nil
	})
	report := func(obj any, deleted, spec bool) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		m, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			return
		}
		inf.mu.Lock()
		svcs := inf.byName[m.GetName()]
		inf.mu.Unlock()
		ref := inf.kind + " " + m.GetName()
		if m.GetNamespace() != "" {
			ref = inf.kind + " " + m.GetNamespace() + "/" + m.GetName()
		}
		for _, s := range svcs {
			w.cfg.OnChange(Change{Service: s, Object: ref, Deleted: deleted, Spec: spec || deleted})
		}
	}
	_, _ = si.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*metav1.PartialObjectMetadata)
			n, ok2 := newObj.(*metav1.PartialObjectMetadata)
			if !ok1 || !ok2 || o.ResourceVersion == n.ResourceVersion {
				return // a relist of an unchanged object
			}
			spec := n.Generation == 0 || o.Generation != n.Generation || n.DeletionTimestamp != nil ||
				!maps.Equal(o.Labels, n.Labels) || !maps.Equal(o.Annotations, n.Annotations)
			report(newObj, false, spec)
		},
		DeleteFunc: func(obj any) { report(obj, true, true) },
	})
	w.log.Debug("watching managed objects", "resource", k.gvr.String(), "namespace", k.namespace, "fields", k.fields)
	w.wg.Go(func() { si.RunWithContext(ctx) })
	// What changed before the watch began has no event: once the first
	// list is in, every service it covers is reported once.
	w.wg.Go(func() {
		if !cache.WaitForCacheSync(ctx.Done(), si.HasSynced) {
			return
		}
		inf.mu.Lock()
		seen := map[string]bool{}
		for _, svcs := range inf.byName {
			for _, s := range svcs {
				seen[s] = true
			}
		}
		inf.mu.Unlock()
		for _, s := range slices.Sorted(maps.Keys(seen)) {
			w.cfg.OnChange(Change{Service: s, Object: "(watch of " + k.gvr.Resource + " started)", Spec: true})
		}
	})
}
