// Package services is the end-to-end scenario of services at the edge: a
// real hub and real agents, each on its own real cluster (kube-apiserver,
// etcd, kwok nodes), charts from a real Helm repository on loopback,
// installed, upgraded and removed with Helm; failures that stay contained;
// drift repaired with the hub down, across an agent restart; and delta
// resync after a partition.
package services

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

var bins *e2etest.Bins

func TestMain(m *testing.M) { e2etest.Main(m, &bins) }

// brokenChart writes a chart whose template fails to render.
func brokenChart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "broken")
	if err := os.MkdirAll(filepath.Join(dir, "templates"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"Chart.yaml":          "apiVersion: v2\nname: broken\nversion: 0.1.0\n",
		"values.yaml":         "{}\n",
		"templates/fail.yaml": "{{ fail \"broken on purpose\" }}\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// proxy forwards TCP to target and can cut every connection, to simulate
// a link that drops.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.serve)
	t.Cleanup(func() { ln.Close(); p.cut(); p.wg.Wait() })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Go(func() { _, _ = io.Copy(u, c); u.Close() })
		p.wg.Go(func() { _, _ = io.Copy(c, u); c.Close() })
	}
}

// cut closes every proxied connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func services(t *testing.T, hub *e2etest.Hub) map[string]e2etest.Service { return hub.Services(t) }

func waitServices(t *testing.T, hub *e2etest.Hub, timeout time.Duration, want map[string]string) {
	t.Helper()
	hub.WaitServices(t, timeout, want)
}

func deploymentReplicas(ctx context.Context, c *cluster.Cluster, ns, name string) (int32, error) {
	d, err := c.Clientset.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0, err
	}
	return d.Status.AvailableReplicas, nil
}

func runningPods(ctx context.Context, c *cluster.Cluster, ns string) (int, error) {
	pods, err := c.Clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range pods.Items {
		if p.Status.Phase == "Running" {
			n++
		}
	}
	return n, nil
}

type agent struct {
	name, dir string
	kube      *cluster.Cluster
	proc      *e2etest.Proc
	hubAddr   string
	// link, if set, is the proxy the agent reaches the hub through.
	link *proxy
}

func (a *agent) start(t *testing.T, token string) {
	t.Helper()
	args := []string{"tether-agent", "run", "--data-dir", a.dir, "--hub", a.hubAddr, "--kubeconfig", a.kube.KubeconfigPath,
		"--max-backoff", "2s", "--drift-interval", "2s", "--health-timeout", "45s"}
	if token != "" {
		args = append(args, "--token", token)
	}
	a.proc = bins.Start(t, a.name, nil, args...)
}

const manifests = `
apiVersion: tether.dev/v1alpha1
kind: HelmRepository
metadata: {name: testrepo, namespace: apps}
spec: {url: %[1]q}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: podinfo-6.14.1, namespace: apps}
spec:
  helm:
    chartSpec: {chart: podinfo, version: 6.14.1, sourceRef: {kind: HelmRepository, name: testrepo}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: ingress-nginx-4.15.1, namespace: apps}
spec:
  helm:
    chartSpec: {chart: ingress-nginx, version: 4.15.1, sourceRef: {kind: HelmRepository, name: testrepo}}
---
apiVersion: tether.dev/v1alpha1
kind: MultiClusterService
metadata: {name: edge-apps, namespace: apps}
spec:
  clusterSelector: {matchLabels: {tier: edge}}
  serviceSpec:
    priority: 100
    services:
      - template: podinfo-6.14.1
        name: podinfo
        namespace: web
        values: |
          replicaCount: %[2]d
          ui:
            message: "hello from {{ .Cluster.Name }}"
%[3]s`

const ingressService = `      - template: ingress-nginx-4.15.1
        name: ingress
        namespace: ingress
        values: |
          controller:
            admissionWebhooks: {enabled: false}
            service: {type: ClusterIP}
`

func TestServicesAtTheEdge(t *testing.T) {
	repoURL := e2etest.HelmRepo(t, e2etest.SharedChart(t, "podinfo"), e2etest.SharedChart(t, "ingress-nginx"))
	ctx := t.Context()

	hub := bins.StartHub(t, "--heartbeat", "2s")
	var agents []*agent
	for _, name := range []string{"edge-a", "edge-b"} {
		kube := cluster.Start(t, cluster.Options{Name: name, NodeCount: 2})
		a := &agent{name: name, dir: t.TempDir(), kube: kube, hubAddr: hub.AgentAddr}
		if name == "edge-b" {
			a.link = newProxy(t, hub.AgentAddr)
			a.hubAddr = a.link.addr()
		}
		a.start(t, hub.Token(t, name))
		bins.MustRun(t, hub.Env, "tether", "label", "cluster", name, "tier=edge")
		agents = append(agents, a)
	}
	apply := func(doc string) string {
		t.Helper()
		out, errOut, code := bins.RunStdin(t, hub.Env, []byte(doc), "tether", "apply", "-f", "-")
		if code != 0 {
			t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
		}
		return out
	}
	apply(fmt.Sprintf(manifests, repoURL, 1, ingressService))

	// Installed on both clusters selected by label; Deployed only with pods
	// Running.
	want := map[string]string{}
	for _, a := range agents {
		want[a.name+"/web/podinfo"] = "Deployed"
		want[a.name+"/ingress/ingress"] = "Deployed"
	}
	waitServices(t, hub, 5*time.Minute, want)
	for _, a := range agents {
		if n, err := runningPods(ctx, a.kube, "web"); err != nil || n < 1 {
			t.Fatalf("%s: podinfo pods Running = %d, %v", a.name, n, err)
		}
	}

	// Upgrade by a values change.
	apply(fmt.Sprintf(manifests, repoURL, 2, ingressService))
	for _, a := range agents {
		e2etest.Eventually(t, a.name+" podinfo at 2 replicas", 5*time.Minute, func() (bool, string) {
			n, err := deploymentReplicas(ctx, a.kube, "web", "podinfo")
			return err == nil && n == 2, fmt.Sprint(n, err)
		})
	}
	waitServices(t, hub, 3*time.Minute, want)

	// Failures stay contained: a chart that does not render, and one whose
	// pods never become ready (no node matches), on edge-a only; podinfo
	// and ingress stay Deployed.
	if out, errOut, code := bins.Run(t, hub.Env, "tether", "chart", "push", brokenChart(t)); code != 0 {
		t.Fatalf("chart push: %s%s", out, errOut)
	}
	apply(`
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: broken-0.1.0, namespace: tether-system}
spec: {helm: {chartSpec: {chart: broken, version: 0.1.0, sourceRef: {kind: HelmRepository, name: tether-local}}}}
---
apiVersion: tether.dev/v1alpha1
kind: ClusterDeployment
metadata: {name: edge-a, namespace: apps}
spec:
  template: adopted
  serviceSpec:
    services:
      - {template: broken-0.1.0, name: broken, namespace: broken}
      - template: podinfo-6.14.1
        name: stuck
        namespace: stuck
        values: |
          nodeSelector: {no-such-node: "true"}
`)
	waitServices(t, hub, 5*time.Minute, map[string]string{
		"edge-a/broken/broken": "Failed", "edge-a/stuck/stuck": "Failed",
		"edge-a/web/podinfo": "Deployed", "edge-a/ingress/ingress": "Deployed", "edge-b/web/podinfo": "Deployed",
	})
	got := services(t, hub)
	if m := got["edge-a/broken/broken"].Message; !strings.Contains(m, "broken on purpose") {
		t.Errorf("broken chart message = %q; want Helm's render error", m)
	}
	if m := got["edge-a/stuck/stuck"].Message; !strings.Contains(m, "not healthy") {
		t.Errorf("never-ready message = %q; want a health message", m)
	}

	// Removed by deleting the service from the MultiClusterService.
	apply(fmt.Sprintf(manifests, repoURL, 2, ""))
	for _, a := range agents {
		e2etest.Eventually(t, a.name+" ingress uninstalled", 3*time.Minute, func() (bool, string) {
			_, err := a.kube.Clientset.AppsV1().Deployments("ingress").Get(ctx, "ingress-ingress-nginx-controller", metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	}
	e2etest.Eventually(t, "ingress gone from services", 2*time.Minute, func() (bool, string) {
		got := services(t, hub)
		_, a := got["edge-a/ingress/ingress"]
		_, b := got["edge-b/ingress/ingress"]
		return !a && !b, fmt.Sprintf("%+v", got)
	})

	// Hub down: the agent restores a deleted workload from its cache, also
	// after its own restart.
	hub.Proc.Stop(t)
	a := agents[0]
	restored := func(what string) {
		t.Helper()
		if err := a.kube.Clientset.AppsV1().Deployments("web").Delete(ctx, "podinfo", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e2etest.Eventually(t, what, 3*time.Minute, func() (bool, string) {
			n, err := deploymentReplicas(ctx, a.kube, "web", "podinfo")
			return err == nil && n == 2, fmt.Sprint(n, err)
		})
	}
	restored("deleted podinfo restored with the hub down")
	a.proc.Stop(t)
	a.start(t, "")
	restored("deleted podinfo restored after an agent restart, hub still down")

	// Delta resync: edge-b is partitioned while the desired state changes;
	// on reconnect it gets only the change.
	hub.Restart(t)
	b := agents[1]
	b.proc.Stop(t)
	apply(fmt.Sprintf(manifests, repoURL, 3, ""))
	b.start(t, "")
	e2etest.Eventually(t, "edge-b catches up to 3 replicas", 5*time.Minute, func() (bool, string) {
		n, err := deploymentReplicas(ctx, b.kube, "web", "podinfo")
		return err == nil && n == 3, fmt.Sprint(n, err)
	})
	waitServices(t, hub, 3*time.Minute, map[string]string{"edge-b/web/podinfo": "Deployed", "edge-a/web/podinfo": "Deployed"})
	var cl struct {
		State             string
		BytesIn, BytesOut uint64
		ConnectedSince    time.Time
	}
	bins.JSON(t, hub.Env, &cl, "tether", "get", "cluster", "edge-b", "-o", "json")
	t.Logf("edge-b reconnect after one changed service (agent restarted: full TLS handshake, delta, status): %d bytes in, %d out", cl.BytesIn, cl.BytesOut)

	// A no-change reconnect: cut the link; the agent resumes its TLS
	// session and sends only hello and heartbeats.
	before := cl.ConnectedSince
	b.link.cut()
	e2etest.Eventually(t, "edge-b reconnected", time.Minute, func() (bool, string) {
		bins.JSON(t, hub.Env, &cl, "tether", "get", "cluster", "edge-b", "-o", "json")
		return cl.State == "Connected" && cl.ConnectedSince.After(before), fmt.Sprintf("%+v", cl)
	})
	t.Logf("edge-b no-change reconnect: %d bytes in, %d out (TLS resumption, hello/welcome)", cl.BytesIn, cl.BytesOut)
}

func TestApplyRefusesBadInput(t *testing.T) {
	hub := bins.StartHub(t)
	good := `apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: web-1.0.0, namespace: apps}
spec: {helm: {chartSpec: {chart: web, version: 1.0.0, sourceRef: {kind: HelmRepository, name: tether-local}}}}
`
	if _, errOut, code := bins.RunStdin(t, hub.Env, []byte(good), "tether", "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply good template: %s", errOut)
	}
	// Each bad file also carries a valid ConfigMap: a file is applied
	// atomically, so it must not appear.
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: apps}\ndata: {a: b}\n---\n"
	tests := []struct{ name, doc, want string }{
		{"invalid YAML", "kind: [unclosed\n", "document 2"},
		{"unknown kind", "apiVersion: tether.dev/v1alpha1\nkind: Widget\nmetadata: {name: w}\n", `unknown kind "Widget"`},
		{"missing template", "apiVersion: tether.dev/v1alpha1\nkind: ClusterDeployment\nmetadata: {name: edge, namespace: apps}\nspec: {template: adopted, serviceSpec: {services: [{template: nope, name: web, namespace: web}]}}\n", "ServiceTemplate nope not found"},
		{"bad values", "apiVersion: tether.dev/v1alpha1\nkind: ClusterDeployment\nmetadata: {name: edge, namespace: apps}\nspec: {template: adopted, serviceSpec: {services: [{template: web-1.0.0, name: web, namespace: web, values: \"replicaCount: [1\"}]}}\n", "values"},
		{"unknown field", "apiVersion: tether.dev/v1alpha1\nkind: ServiceTemplate\nmetadata: {name: web-2, namespace: apps}\nspec: {helm: {chartSpec: {chart: web, version: 1.0.0, sourceRef: {name: tether-local}}}, colour: blue}\n", "colour"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := bins.RunStdin(t, hub.Env, []byte(cm+tt.doc), "tether", "apply", "-f", "-")
			if code != 1 || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "stdin") {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 naming the source and %q", code, errOut, tt.want)
			}
		})
	}
	var cms, sts []any
	bins.JSON(t, hub.Env, &cms, "tether", "get", "configmaps", "-A", "-o", "json")
	bins.JSON(t, hub.Env, &sts, "tether", "get", "servicetemplates", "-A", "-o", "json")
	if len(cms) != 0 || len(sts) != 1 {
		t.Fatalf("after refused applies: %d configmaps, %d templates; want 0 and the 1 applied before", len(cms), len(sts))
	}

	// Charts: not a chart, and too big.
	dir := t.TempDir()
	notChart := filepath.Join(dir, "x.tgz")
	if err := os.WriteFile(notChart, []byte{0x1f, 0x8b, 0, 0, 0}, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := bins.Run(t, hub.Env, "tether", "chart", "push", notChart); code != 1 || !strings.Contains(errOut, "push chart") {
		t.Errorf("push of a non-chart: exit %d, %s", code, errOut)
	}
	big := filepath.Join(dir, "big.tgz")
	if err := os.WriteFile(big, append([]byte{0x1f, 0x8b}, make([]byte, 21<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := bins.Run(t, hub.Env, "tether", "chart", "push", big); code != 1 || !strings.Contains(strings.ToLower(errOut), "large") {
		t.Errorf("push of a 21 MiB file: exit %d, %s", code, errOut)
	}
	var charts []any
	bins.JSON(t, hub.Env, &charts, "tether", "get", "charts", "-o", "json")
	if len(charts) != 0 {
		t.Errorf("refused pushes stored %d charts", len(charts))
	}
}
