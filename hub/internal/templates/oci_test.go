package templates_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tetherfleet/tether/e2e/e2etest"
	"github.com/tetherfleet/tether/e2e/ociregistry"
	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
	"github.com/tetherfleet/tether/hub/internal/templates"
)

// syncBuffer collects log output from concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type world struct {
	repo *objects.Repo
	cs   *charts.Store
	r    *templates.Resolver
	logs *syncBuffer
	st   *boltstore.Store
	log  *slog.Logger
}

func newWorld(t *testing.T) *world {
	t.Helper()
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "hub.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	repo, err := objects.NewRepo(objects.RepoConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cs, err := charts.New(charts.Config{Dir: filepath.Join(dir, "charts"), Store: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	r, err := templates.New(templates.Config{Repo: repo, Charts: cs, Watcher: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return &world{repo: repo, cs: cs, r: r, logs: logs, st: st, log: log}
}

func (w *world) apply(t *testing.T, manifests string) {
	t.Helper()
	objs, err := objects.Decode([]byte(manifests), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.repo.Apply(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
}

func (w *world) template(t *testing.T, ns, name string) *objects.ServiceTemplate {
	t.Helper()
	o, err := w.repo.Get(context.Background(), objects.KindServiceTemplate, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*objects.ServiceTemplate)
}

// TestResolverFluxOCIHelmRepository: a ServiceTemplate naming a Flux
// HelmRepository of type oci, as k0rdent's catalog writes it, resolves
// from a real registry on loopback to the pushed archive's digest.
func TestResolverFluxOCIHelmRepository(t *testing.T) {
	reg := ociregistry.Start(t, ociregistry.Config{})
	archive := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	reg.PushChart(t, archive, "k0rdent-catalog/charts")
	w := newWorld(t)
	w.apply(t, fmt.Sprintf(`
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: k0rdent-catalog, namespace: kcm-system}
spec:
  type: oci
  url: %s
  insecure: true
  interval: 10m
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: podinfo-6-14-1, namespace: kcm-system}
spec:
  helm:
    chartSpec:
      chart: podinfo
      version: 6.14.1
      interval: 10m
      sourceRef: {kind: HelmRepository, name: k0rdent-catalog}
`, reg.URL("k0rdent-catalog/charts")))
	pending, _, err := w.r.ResolveAll(context.Background())
	if err != nil || pending != 0 {
		t.Fatalf("ResolveAll = %d pending, %v; status %+v", pending, err, w.template(t, "kcm-system", "podinfo-6-14-1").Status)
	}
	st := w.template(t, "kcm-system", "podinfo-6-14-1")
	if ready, why := st.Ready(); !ready || st.Status.ChartDigest != charts.Digest(archive) || !w.cs.Has(st.Status.ChartDigest) {
		t.Fatalf("template ready %v (%s), status %+v; want digest %s stored", ready, why, st.Status, charts.Digest(archive))
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// TestResolverRepositorySecrets: secretRef and certSecretRef name Secrets
// in the HelmRepository's namespace (Flux's keys username/password and
// ca.crt/tls.crt/tls.key); with them a registry behind basic auth, a
// private CA and client certificates resolves. A missing Secret or key,
// or a wrong password, is a clear status message, and no password shows
// in any status or log.
func TestResolverRepositorySecrets(t *testing.T) {
	const user, pass, wrong = "robot", "registry-pass-8812", "wrong-pass-3391"
	reg := ociregistry.Start(t, ociregistry.Config{Username: user, Password: pass, TLS: true, ClientCerts: true})
	archive := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	reg.PushChart(t, archive, "charts")
	w := newWorld(t)
	repo := func(name, secret string) string {
		return fmt.Sprintf(`---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: %s, namespace: apps}
spec: {type: oci, url: %s, secretRef: {name: %s}, certSecretRef: {name: tls}}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: %s, namespace: apps}
spec: {helm: {chartSpec: {chart: podinfo, version: 6.14.1, sourceRef: {kind: HelmRepository, name: %s}}}}
`, name, reg.URL("charts"), secret, name, name)
	}
	w.apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: apps}
stringData: {username: %s, password: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: wrong-creds, namespace: apps}
stringData: {username: %s, password: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: no-password, namespace: apps}
stringData: {username: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: apps}
type: kubernetes.io/tls
data: {ca.crt: %s, tls.crt: %s, tls.key: %s}
`, user, pass, user, wrong, user, b64(reg.CAPEM), b64(reg.ClientCertPEM), b64(reg.ClientKeyPEM))+
		repo("good", "creds")+repo("wrong", "wrong-creds")+repo("nokey", "no-password")+repo("nosecret", "absent"))

	pending, _, err := w.r.ResolveAll(context.Background())
	if err != nil || pending != 3 {
		t.Fatalf("ResolveAll = %d pending, %v; want the three broken ones pending", pending, err)
	}
	good := w.template(t, "apps", "good")
	if ready, why := good.Ready(); !ready || good.Status.ChartDigest != charts.Digest(archive) {
		t.Fatalf("good template: ready %v (%s), status %+v", ready, why, good.Status)
	}
	for name, want := range map[string]string{
		"nokey":    `HelmRepository apps/nokey: secretRef "no-password": key "password" missing`,
		"nosecret": `HelmRepository apps/nosecret: secretRef "absent": no Secret apps/absent`,
		"wrong":    "chart podinfo 6.14.1 from " + reg.URL("charts") + ": pull " + reg.URL("charts") + "/podinfo:6.14.1: ",
	} {
		st := w.template(t, "apps", name).Status
		if st.Valid || !strings.HasPrefix(st.Message, want) {
			t.Errorf("template %s: status %+v; want message starting %q", name, st, want)
		}
		if strings.Contains(st.Message, pass) || strings.Contains(st.Message, wrong) {
			t.Errorf("template %s: status message shows a password: %s", name, st.Message)
		}
	}
	if msg := w.template(t, "apps", "wrong").Status.Message; !strings.Contains(msg, "401") || !strings.Contains(msg, "credentials refused") {
		t.Errorf("wrong-password message %q does not say the credentials were refused", msg)
	}
	if out := w.logs.String(); strings.Contains(out, pass) || strings.Contains(out, wrong) {
		t.Errorf("logs show a password:\n%s", out)
	}

	// Fixing the Secret fixes the template on the next pass.
	w.apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: no-password, namespace: apps}
stringData: {username: %s, password: %s}
`, user, pass))
	if _, _, err := w.r.ResolveAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := w.template(t, "apps", "nokey").Status; !st.Valid || st.ChartDigest != good.Status.ChartDigest {
		t.Fatalf("after the fix: status %+v", st)
	}
}

// TestResolverDockerConfigSecret: an OCI HelmRepository's secretRef may
// be a kubernetes.io/dockerconfigjson Secret, as Flux allows.
func TestResolverDockerConfigSecret(t *testing.T) {
	const user, pass = "puller", "docker-pass-6021"
	reg := ociregistry.Start(t, ociregistry.Config{Username: user, Password: pass})
	archive := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	reg.PushChart(t, archive, "charts")
	w := newWorld(t)
	dockerConfig := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Host, b64([]byte(user+":"+pass)))
	w.apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: pull-secret, namespace: apps}
type: kubernetes.io/dockerconfigjson
data: {.dockerconfigjson: %s}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: reg, namespace: apps}
spec: {type: oci, url: %s, insecure: true, secretRef: {name: pull-secret}}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: podinfo, namespace: apps}
spec: {helm: {chartSpec: {chart: podinfo, version: 6.14.1, sourceRef: {kind: HelmRepository, name: reg}}}}
`, b64([]byte(dockerConfig)), reg.URL("charts")))
	if pending, _, err := w.r.ResolveAll(context.Background()); err != nil || pending != 0 {
		t.Fatalf("ResolveAll = %d pending, %v; status %+v", pending, err, w.template(t, "apps", "podinfo").Status)
	}
	if st := w.template(t, "apps", "podinfo").Status; st.ChartDigest != charts.Digest(archive) {
		t.Fatalf("status %+v", st)
	}
}
