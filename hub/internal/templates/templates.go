// Package templates resolves each ServiceTemplate's chart into the hub's
// chart store and records its digest in the template's status, which the
// desired-state compiler reads: a chartSpec's chart from its
// HelmRepository (an index.yaml repository or an OCI registry, with the
// credentials of its secretRef and the CA and client certificate of its
// certSecretRef) or a pushed one, fetched once; and, made again whenever
// their source moves (at most once per its interval), the chart of a
// chartRef (a Flux OCIRepository or HelmChart), the chart directory of a
// GitRepository (chartSpec, chartSource), and the charts the hub
// generates from kustomize and resources templates. Failures are recorded
// in the status message (never with a secret) and retried.
package templates

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/controller"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/sources"
	"github.com/tetherfleet/tether/hub/internal/store"
)

// Repo is the part of the object repository the resolver uses.
type Repo interface {
	Get(ctx context.Context, kind, namespace, name string) (objects.Object, error)
	List(ctx context.Context, kind, namespace string) ([]objects.Object, error)
	UpdateStatus(ctx context.Context, kind, namespace, name string, mutate func(objects.Object) error) (objects.Object, error)
}

// Charts resolves charts into the chart store, and stores the charts
// the resolver generates from manifest sources.
type Charts interface {
	Resolve(ctx context.Context, ref charts.RepoRef, name, version string) (charts.Chart, error)
	PullOCI(ctx context.Context, ref charts.RepoRef, name, tag, digest string) (charts.Chart, error)
	AddGenerated(ctx context.Context, archive []byte, source string, authed bool) (charts.Chart, error)
}

// Watcher follows store changes.
type Watcher interface {
	Watch(ctx context.Context, kind string, fromRevision uint64) (<-chan store.Event, error)
	Revision(ctx context.Context) (uint64, error)
}

// Config configures a Resolver.
type Config struct {
	Repo    Repo
	Charts  Charts
	Watcher Watcher
	Logger  *slog.Logger
	// Retry is how often templates that failed to resolve are retried.
	Retry time.Duration
	// Git fetches git sources; nil means sources.GitFetcher{}.
	Git GitFetcher
	// Now is the clock of GitRepository intervals; nil means time.Now.
	Now func() time.Time
}

// Resolver keeps ServiceTemplate statuses resolved.
type Resolver struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	fetched map[string]fetch // by template ns/name: the last git fetch
}

// New returns a Resolver.
func New(cfg Config) (*Resolver, error) {
	if cfg.Repo == nil || cfg.Charts == nil || cfg.Watcher == nil {
		return nil, errors.New("templates: Config.Repo, Charts and Watcher are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 30 * time.Second
	}
	if cfg.Git == nil {
		cfg.Git = sources.GitFetcher{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Resolver{cfg: cfg, log: cfg.Logger, fetched: map[string]fetch{}}, nil
}

// ResolveAll resolves every template whose status does not match its spec,
// and makes again the chart of every template the hub gets from a source
// (chartRef, chartSource, a chartSpec of a GitRepository, kustomize,
// resources). It returns how many are still unresolved, and when to run
// again: the shortest spec.interval of their sources, else Config.Retry
// (0: nothing to run again for).
func (r *Resolver) ResolveAll(ctx context.Context) (pending int, retry time.Duration, err error) {
	objs, err := r.cfg.Repo.List(ctx, objects.KindServiceTemplate, "")
	if err != nil {
		return 0, 0, fmt.Errorf("list service templates: %w", err)
	}
	for _, o := range objs {
		st, isTemplate := o.(*objects.ServiceTemplate)
		if !isTemplate {
			continue
		}
		var ok bool
		var again time.Duration
		if st.Spec.Generated() {
			// Rendered every pass: the source (a ConfigMap, a branch)
			// may have changed although the template has not.
			ok, again = r.generate(ctx, st)
		} else if ready, _ := st.Ready(); ready {
			continue
		} else {
			ok, again = r.resolve(ctx, st)
		}
		if again > 0 && (retry == 0 || again < retry) {
			retry = again
		}
		if !ok {
			pending++
		}
	}
	return pending, retry, nil
}

// minRetry bounds how often a HelmRepository's interval makes the
// resolver fetch an index again.
const minRetry = 5 * time.Second

// resolve fetches one template's chart and records the outcome. When it
// fails, again is when to retry: the repository's interval if it has
// one.
func (r *Resolver) resolve(ctx context.Context, st *objects.ServiceTemplate) (ok bool, again time.Duration) {
	md := st.Metadata
	cs := st.Spec.Helm.ChartSpec
	if !st.Spec.HasChart() {
		return true, 0 // nothing to resolve; Ready says why it is not
	}
	ref, interval, err := r.repoRef(ctx, md.Namespace, cs.SourceRef)
	again = r.cfg.Retry
	if interval > 0 {
		again = max(interval, minRetry)
	}
	var c charts.Chart
	if err == nil {
		c, err = r.cfg.Charts.Resolve(ctx, ref, cs.Chart, cs.Version)
	}
	if ctx.Err() != nil {
		return false, again
	}
	_, uerr := r.cfg.Repo.UpdateStatus(ctx, objects.KindServiceTemplate, md.Namespace, md.Name, func(o objects.Object) error {
		t := o.(*objects.ServiceTemplate)
		if err != nil {
			t.Status = objects.ServiceTemplateStatus{Message: err.Error()}
			return nil
		}
		t.Status = objects.ServiceTemplateStatus{ChartDigest: c.Digest, ChartName: c.Name, ChartVersion: c.Version, Valid: true}
		return nil
	})
	if uerr != nil && !errors.Is(uerr, store.ErrNotFound) {
		r.log.Warn("record service template status", "template", md.Namespace+"/"+md.Name, "err", uerr)
	}
	if err != nil {
		r.log.Warn("service template chart not resolved", "template", md.Namespace+"/"+md.Name, "chart", cs.Chart, "version", cs.Version, "err", err, "retry", again)
		return false, again
	}
	r.log.Info("service template resolved", "template", md.Namespace+"/"+md.Name, "chart", c.Name, "version", c.Version, "digest", c.Digest)
	return true, 0
}

// errSuspended: the template's HelmRepository has spec.suspend set.
var errSuspended = errors.New("suspended (spec.suspend); charts are not fetched from it")

// repoRef returns the chart source a template names and the repository's
// spec.interval (0 if none), with the credentials and TLS material of its
// secretRef and certSecretRef read from Secrets in its namespace.
func (r *Resolver) repoRef(ctx context.Context, namespace string, src objects.SourceRef) (charts.RepoRef, time.Duration, error) {
	if src.Name == objects.LocalRepository {
		return charts.RepoRef{Name: objects.LocalRepository}, 0, nil
	}
	o, err := r.cfg.Repo.Get(ctx, objects.KindHelmRepository, namespace, src.Name)
	if err != nil {
		return charts.RepoRef{}, 0, fmt.Errorf("HelmRepository %s/%s: %w", namespace, src.Name, err)
	}
	hr := o.(*objects.HelmRepository)
	sp := hr.Spec
	interval := sp.Interval.Std()
	key := "HelmRepository " + hr.Metadata.Namespace + "/" + hr.Metadata.Name
	if sp.Suspend {
		return charts.RepoRef{}, interval, fmt.Errorf("%s: %w", key, errSuspended)
	}
	ref := charts.RepoRef{
		Name: hr.Metadata.Name, URL: sp.URL, Type: sp.Type,
		PassCredentials: sp.PassCredentials, Insecure: sp.Insecure,
		InsecureSkipTLSVerify: sp.InsecureSkipTLSVerify,
	}
	if err := r.auth(ctx, hr.Metadata.Namespace, key, isOCI(sp), sp.SecretRef, sp.CertSecretRef, &ref); err != nil {
		return charts.RepoRef{}, interval, err
	}
	return ref, interval, nil
}

// auth fills in ref's credentials from secretRef (username and password,
// or for an OCI registry a Docker config) and its TLS material from
// certSecretRef (ca.crt, tls.crt, tls.key): Secrets in namespace ns,
// named in errors as key's.
func (r *Resolver) auth(ctx context.Context, ns, key string, oci bool, secretRef, certSecretRef *objects.LocalObjectReference, ref *charts.RepoRef) error {
	if sr := secretRef; sr != nil {
		data, err := r.secretData(ctx, ns, sr.Name)
		if err != nil {
			return fmt.Errorf("%s: secretRef %q: %w", key, sr.Name, err)
		}
		_, hasUser := data["username"]
		if dc, ok := data[DockerConfigKey]; ok && !hasUser && oci {
			// Flux also takes a registry's docker config for OCI.
			host, _, _ := strings.Cut(strings.TrimPrefix(ref.URL, "oci://"), "/")
			u, p, err := dockerLogin(dc, host)
			if err != nil {
				return fmt.Errorf("%s: secretRef %q: %w", key, sr.Name, err)
			}
			ref.Credentials = &charts.Credentials{Username: u, Password: p}
		} else {
			for _, k := range []string{"username", "password"} {
				if _, ok := data[k]; !ok {
					return fmt.Errorf("%s: secretRef %q: key %q missing", key, sr.Name, k)
				}
			}
			ref.Credentials = &charts.Credentials{Username: string(data["username"]), Password: string(data["password"])}
		}
	}
	if cr := certSecretRef; cr != nil {
		data, err := r.secretData(ctx, ns, cr.Name)
		if err != nil {
			return fmt.Errorf("%s: certSecretRef %q: %w", key, cr.Name, err)
		}
		t := &charts.TLS{CA: data["ca.crt"], Cert: data["tls.crt"], Key: data["tls.key"]}
		switch {
		case len(t.CA) == 0 && len(t.Cert) == 0 && len(t.Key) == 0:
			return fmt.Errorf("%s: certSecretRef %q: none of the keys ca.crt, tls.crt, tls.key", key, cr.Name)
		case len(t.Cert) > 0 && len(t.Key) == 0:
			return fmt.Errorf("%s: certSecretRef %q: key %q missing (tls.crt needs it)", key, cr.Name, "tls.key")
		case len(t.Key) > 0 && len(t.Cert) == 0:
			return fmt.Errorf("%s: certSecretRef %q: key %q missing (tls.key needs it)", key, cr.Name, "tls.crt")
		}
		if _, err := t.Config(); err != nil {
			return fmt.Errorf("%s: certSecretRef %q: %w", key, cr.Name, err)
		}
		ref.TLS = t
	}
	return nil
}

func isOCI(sp objects.HelmRepositorySpec) bool {
	return sp.Type == "oci" || strings.HasPrefix(sp.URL, "oci://")
}

// secretData returns a Secret's data; the error never shows it.
func (r *Resolver) secretData(ctx context.Context, namespace, name string) (map[string][]byte, error) {
	o, err := r.cfg.Repo.Get(ctx, objects.KindSecret, namespace, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no Secret %s/%s", namespace, name)
	}
	if err != nil {
		return nil, err
	}
	sec, ok := o.(*objects.Secret)
	if !ok {
		return nil, fmt.Errorf("get Secret %s/%s: unexpected object %T", namespace, name, o)
	}
	return sec.Data, nil
}

// Run resolves templates when they or their repositories change, and
// retries failures, until ctx is done (controller.Loop).
func (r *Resolver) Run(ctx context.Context) error {
	loop, err := controller.New(controller.Config{
		Name:  "template resolver",
		Store: r.cfg.Watcher,
		// A Secret may be a repository's secretRef or certSecretRef.
		// A ConfigMap, Secret, GitRepository, OCIRepository or HelmChart
		// may be a template's source.
		Kinds: []string{objects.KindServiceTemplate, objects.KindHelmRepository, objects.KindSecret, objects.KindConfigMap,
			objects.KindGitRepository, objects.KindOCIRepository, objects.KindHelmChart},
		Reconcile: func(ctx context.Context) (controller.Result, error) {
			_, again, err := r.ResolveAll(ctx)
			if err != nil || again == 0 {
				return controller.Result{}, err
			}
			return controller.Result{RetryAfter: again}, nil
		},
		Debounce:   50 * time.Millisecond, // batch bursts
		MinBackoff: time.Second,
		Logger:     r.log,
	})
	if err != nil {
		return err
	}
	return loop.Run(ctx)
}
