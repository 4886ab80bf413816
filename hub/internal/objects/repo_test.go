package objects

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/store"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
)

func openStore(t testing.TB) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "hub.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newRepo(t testing.TB) (*Repo, *boltstore.Store) {
	t.Helper()
	s := openStore(t)
	clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r, err := NewRepo(RepoConfig{Store: s, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	return r, s
}

func mustDecode(t testing.TB, y string) []Object {
	t.Helper()
	objs, err := Decode([]byte(y), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

const (
	repoYAML = "apiVersion: tether.dev/v1alpha1\nkind: HelmRepository\nmetadata: {name: public, namespace: acme}\nspec: {url: 'https://charts.example.com'}\n"
	tmplYAML = "apiVersion: tether.dev/v1alpha1\nkind: ServiceTemplate\nmetadata: {name: nginx, namespace: acme}\nspec: {helm: {chartSpec: {chart: nginx, version: 1.0.0, sourceRef: {name: public}}}}\n"
	cdYAML   = "apiVersion: tether.dev/v1alpha1\nkind: ClusterDeployment\nmetadata: {name: edge-1, namespace: acme}\nspec: {template: adopted, serviceSpec: {services: [{template: nginx, name: web}]}}\n"
)

func TestApplyCreateConfigureUnchanged(t *testing.T) {
	r, s := newRepo(t)
	ctx := context.Background()
	res, err := r.Apply(ctx, mustDecode(t, repoYAML+"---\n"+tmplYAML+"---\n"+cdYAML))
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range res {
		if x.Action != Created || x.Generation != 1 || x.ResourceVersion != 1 {
			t.Errorf("first apply: %+v", x)
		}
	}
	if res[1].String() != "servicetemplate/nginx created" {
		t.Errorf("String() = %q", res[1].String())
	}
	if rev, _ := s.Revision(ctx); rev != 1 {
		t.Errorf("one Txn for the batch: revision %d, want 1", rev)
	}

	// Same input: unchanged, nothing written.
	res, err = r.Apply(ctx, mustDecode(t, repoYAML+"---\n"+tmplYAML+"---\n"+cdYAML))
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range res {
		if x.Action != Unchanged {
			t.Errorf("second apply: %+v", x)
		}
	}
	if rev, _ := s.Revision(ctx); rev != 1 {
		t.Errorf("unchanged apply wrote: revision %d", rev)
	}

	// Status is kept across applies and ignored in input.
	if _, err := r.UpdateStatus(ctx, KindServiceTemplate, "acme", "nginx", func(o Object) error {
		o.(*ServiceTemplate).Status = ServiceTemplateStatus{ChartDigest: "sha256:abc", Valid: true}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Label change: configured, generation kept. Status in input ignored.
	in := mustDecode(t, strings.Replace(tmplYAML, "namespace: acme}", "namespace: acme, labels: {a: b}}", 1)+"status: {chartDigest: 'sha256:evil'}\n")
	res, err = r.Apply(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Action != Configured || res[0].Generation != 1 {
		t.Errorf("label change: %+v", res[0])
	}
	// Spec change: generation bumps.
	res, err = r.Apply(ctx, mustDecode(t, strings.Replace(tmplYAML, "1.0.0", "1.1.0", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Action != Configured || res[0].Generation != 2 {
		t.Errorf("spec change: %+v", res[0])
	}
	o, err := r.Get(ctx, KindServiceTemplate, "acme", "nginx")
	if err != nil {
		t.Fatal(err)
	}
	st := o.(*ServiceTemplate)
	if st.Status.ChartDigest != "sha256:abc" {
		t.Errorf("status not kept: %+v", st.Status)
	}
	if st.Metadata.Generation != 2 || uint64(st.Metadata.ResourceVersion) != res[0].ResourceVersion || st.Metadata.UID == "" ||
		st.Metadata.CreationTimestamp == nil || st.Metadata.CreateRevision != 1 || st.Metadata.Labels != nil {
		t.Errorf("metadata = %+v", st.Metadata)
	}
}

func TestApplyIsAtomic(t *testing.T) {
	r, s := newRepo(t)
	ctx := context.Background()
	// The template's repository is missing: nothing of the batch is stored.
	_, err := r.Apply(ctx, mustDecode(t, tmplYAML+"---\n"+"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "ServiceTemplate acme/nginx: spec.helm.chartSpec.sourceRef.name: HelmRepository acme/public not found") {
		t.Fatalf("err = %v", err)
	}
	if rev, _ := s.Revision(ctx); rev != 0 {
		t.Errorf("failed apply wrote: revision %d", rev)
	}
}

func TestApplyReferences(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	_, err := r.Apply(ctx, mustDecode(t, cdYAML))
	if err == nil || !strings.Contains(err.Error(), "ClusterDeployment acme/edge-1: spec.serviceSpec.services[0].template: ServiceTemplate nginx not found in namespace acme or the system namespaces (tether-system, kcm-system, k0rdent-system)") {
		t.Fatalf("err = %v", err)
	}
	// tether-local needs no HelmRepository; references in the same batch count.
	local := strings.Replace(tmplYAML, "name: public", "name: tether-local", 1)
	if _, err := r.Apply(ctx, mustDecode(t, local+"---\n"+cdYAML)); err != nil {
		t.Fatal(err)
	}
	// A reference in another namespace does not count.
	other := strings.Replace(cdYAML, "namespace: acme", "namespace: other", 1)
	if _, err := r.Apply(ctx, mustDecode(t, other)); err == nil || !strings.Contains(err.Error(), "ServiceTemplate nginx not found in namespace other or the system namespaces (tether-system, kcm-system, k0rdent-system)") {
		t.Fatalf("cross-namespace reference: %v", err)
	}
}

func TestSystemNamespaceTemplates(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	sys := strings.Replace(strings.Replace(tmplYAML, "name: public", "name: tether-local", 1), "namespace: acme", "namespace: tether-system", 1)
	if _, err := r.Apply(ctx, mustDecode(t, sys)); err != nil {
		t.Fatal(err)
	}
	// A ClusterDeployment in acme may use the tether-system template.
	if _, err := r.Apply(ctx, mustDecode(t, cdYAML)); err != nil {
		t.Fatalf("template from %s not found: %v", SystemNamespace, err)
	}
	err := r.Delete(ctx, KindServiceTemplate, SystemNamespace, "nginx")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "ClusterDeployment acme/edge-1") {
		t.Fatalf("delete system template in use: %v", err)
	}
}

func TestDeleteInUse(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	mcs := "apiVersion: tether.dev/v1alpha1\nkind: MultiClusterService\nmetadata: {name: m, namespace: acme}\nspec: {serviceSpec: {services: [{template: other, name: x}, {template: nginx, name: z}]}}\n"
	other := strings.Replace(tmplYAML, "name: nginx,", "name: other,", 1)
	if _, err := r.Apply(ctx, mustDecode(t, repoYAML+"---\n"+tmplYAML+"---\n"+other+"---\n"+cdYAML+"---\n"+mcs)); err != nil {
		t.Fatal(err)
	}
	err := r.Delete(ctx, KindServiceTemplate, "acme", "nginx")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "ClusterDeployment acme/edge-1 (services[0]), MultiClusterService acme/m (services[1])") {
		t.Fatalf("delete used template: %v", err)
	}
	if err := r.Delete(ctx, KindHelmRepository, "acme", "public"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "ServiceTemplate acme/nginx, ServiceTemplate acme/other") {
		t.Fatalf("delete used repository: %v", err)
	}
	for _, k := range []string{KindClusterDeployment, KindMultiClusterService} {
		name := map[string]string{KindClusterDeployment: "edge-1", KindMultiClusterService: "m"}[k]
		if err := r.Delete(ctx, k, "acme", name); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Delete(ctx, KindServiceTemplate, "acme", "nginx"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, KindServiceTemplate, "acme", "nginx"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if err := r.Delete(ctx, KindServiceTemplate, "acme", "nginx"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	objs, err := r.List(ctx, KindServiceTemplate, "")
	if err != nil || len(objs) != 1 || objs[0].GetHeader().Metadata.Name != "other" {
		t.Fatalf("List = %v, %v", objs, err)
	}
}

func TestUpdateStatusConcurrent(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	if _, err := r.Apply(ctx, mustDecode(t, repoYAML+"---\n"+tmplYAML+"---\n"+cdYAML)); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.UpdateStatus(ctx, KindClusterDeployment, "acme", "edge-1", func(o Object) error {
				cd := o.(*ClusterDeployment)
				cd.Status.Services = append(cd.Status.Services, ServiceState{Name: string(rune('a' + i)), Namespace: "x", State: "Deployed"})
				cd.Spec.Template = "ignored" // only status is kept
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	o, err := r.Get(ctx, KindClusterDeployment, "acme", "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	cd := o.(*ClusterDeployment)
	if len(cd.Status.Services) != n || cd.Spec.Template != "adopted" || cd.Metadata.Generation != 1 {
		t.Errorf("after %d concurrent status updates: %d services, template %q, generation %d", n, len(cd.Status.Services), cd.Spec.Template, cd.Metadata.Generation)
	}
	if _, err := r.UpdateStatus(ctx, KindClusterDeployment, "acme", "nope", func(Object) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing object: %v", err)
	}
}

func TestApplyBadGoObject(t *testing.T) {
	r, _ := newRepo(t)
	cd := New(KindClusterDeployment).(*ClusterDeployment)
	cd.Metadata.Name = "c"
	cd.Spec.Template = TemplateAdopted
	cd.Spec.Config = []byte("{not json")
	if _, err := r.Apply(context.Background(), []Object{cd, nil}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Apply = %v", err)
	}
}
