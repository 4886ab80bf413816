package telemetry

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

var bins *e2etest.Bins

func TestMain(m *testing.M) { e2etest.Main(m, &bins) }

const (
	clusterName = "edge-tel"
	// interval is the agent's --telemetry-interval.
	interval = 5 * time.Second
)

// hubAPI reads the hub's Prometheus HTTP API with a console token.
type hubAPI struct {
	server, token string
	caPEM         []byte
	hc            *http.Client
}

func newHubAPI(t *testing.T, hub *e2etest.Hub) *hubAPI {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(hub.Dir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Server               string `json:"server"`
		CertificateAuthority string `json:"certificateAuthority"`
		Token                string `json:"token"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("admin config: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cfg.CertificateAuthority)) {
		t.Fatalf("admin config: no CA in certificateAuthority")
	}
	return &hubAPI{server: cfg.Server, token: cfg.Token, caPEM: []byte(cfg.CertificateAuthority),
		hc: &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

type apiResult struct {
	Status    string          `json:"status"`
	Error     string          `json:"error"`
	ErrorType string          `json:"errorType"`
	Data      json.RawMessage `json:"data"`
}

// get calls an API path with form values and returns its data.
func (h *hubAPI) get(t *testing.T, path string, v url.Values) json.RawMessage {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.server+path, strings.NewReader(v.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+h.token)
	resp, err := h.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %v: %v", path, v, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r apiResult
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
		t.Fatalf("%s %v: %s: %s (%v)", path, v, resp.Status, body, err)
	}
	return r.Data
}

// query runs an instant query now; the result is a vector or a matrix
// (a range selector returns raw samples).
func (h *hubAPI) query(t *testing.T, expr string) []e2etest.PromSeries {
	t.Helper()
	var d struct {
		ResultType string               `json:"resultType"`
		Result     []e2etest.PromSeries `json:"result"`
	}
	raw := h.get(t, "/api/v1/query", url.Values{"query": {expr}})
	if err := json.Unmarshal(raw, &d); err != nil {
		// scalar or string results
		return []e2etest.PromSeries{{Metric: map[string]string{}}}
	}
	return d.Result
}

// queryRange runs a range query over the last span at step.
func (h *hubAPI) queryRange(t *testing.T, expr string, span, step time.Duration) []e2etest.PromSeries {
	t.Helper()
	var d struct {
		ResultType string               `json:"resultType"`
		Result     []e2etest.PromSeries `json:"result"`
	}
	end := time.Now()
	raw := h.get(t, "/api/v1/query_range", url.Values{"query": {expr},
		"start": {strconv.FormatInt(end.Add(-span).Unix(), 10)}, "end": {strconv.FormatInt(end.Unix(), 10)}, "step": {step.String()}})
	if err := json.Unmarshal(raw, &d); err != nil || d.ResultType != "matrix" {
		t.Fatalf("query_range %s: %v: %s", expr, err, raw)
	}
	return d.Result
}

// numAny is a JSON number (a sample's timestamp).
func numAny(v any) float64 {
	f, _ := v.(float64)
	return f
}

func value(t *testing.T, s e2etest.PromSeries) float64 {
	t.Helper()
	return num(t, s.Value[1])
}

// one returns the value of a query whose result is one series (ok false
// if there is none).
func (h *hubAPI) one(t *testing.T, expr string) (float64, bool, string) {
	t.Helper()
	res := h.query(t, expr)
	if len(res) != 1 {
		return 0, false, fmt.Sprintf("%s: %d series: %v", expr, len(res), res)
	}
	v := value(t, res[0])
	return v, true, fmt.Sprintf("%s = %v", expr, v)
}

// waitValue waits until expr gives one series whose value satisfies ok.
func (h *hubAPI) waitValue(t *testing.T, expr string, timeout time.Duration, ok func(float64) bool) float64 {
	t.Helper()
	var got float64
	e2etest.Eventually(t, expr, timeout, func() (bool, string) {
		v, found, state := h.one(t, expr)
		got = v
		return found && ok(v), state
	})
	return got
}

// agentStatus is the part of `tether-agent status -o json` the test reads.
type agentStatus struct {
	Link struct {
		State string `json:"state"`
	} `json:"link"`
	Outbox struct {
		Kinds map[string]struct {
			Pending uint64 `json:"pending"`
			Dropped uint64 `json:"dropped"`
		} `json:"kinds"`
	} `json:"outbox"`
	Telemetry *struct {
		Collections uint64    `json:"collections"`
		Failures    uint64    `json:"failures"`
		LastAt      time.Time `json:"lastAt"`
		LastError   string    `json:"lastError"`
		UsageSource string    `json:"usageSource"`
	} `json:"telemetry"`
}

func statusOf(t *testing.T, dataDir string) agentStatus {
	t.Helper()
	var st agentStatus
	bins.JSON(t, nil, &st, "tether-agent", "status", "--data-dir", dataDir, "-o", "json")
	if st.Telemetry == nil {
		t.Fatalf("tether-agent status: no telemetry section: %+v", st)
	}
	return st
}

func (st agentStatus) String() string {
	b, _ := json.Marshal(st)
	return string(b)
}

// readmeAlertExample is the alert example of the README, applied as the
// user would apply it.
func readmeAlertExample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e2etest.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "<!-- alert-example:")
	if i < 0 {
		t.Fatal("README.md: no <!-- alert-example: --> block")
	}
	s = s[i:]
	start := strings.Index(s, "```yaml\n")
	if start < 0 {
		t.Fatal("README.md: alert example has no yaml block")
	}
	s = s[start+len("```yaml\n"):]
	end := strings.Index(s, "```")
	if end < 0 {
		t.Fatal("README.md: alert example block not closed")
	}
	return s[:end]
}

// webhookMessage is the part of Alertmanager's webhook JSON read here.
type webhookMessage struct {
	Version  string            `json:"version"`
	Status   string            `json:"status"`
	Receiver string            `json:"receiver"`
	GroupKey string            `json:"groupKey"`
	Common   map[string]string `json:"commonLabels"`
	Alerts   []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"alerts"`
}

// TestTelemetryEndToEnd is the scenario of a site's metrics: a real hub
// (`tether serve`, remote write to a real Prometheus, short rule
// evaluation) and a real `tether-agent run` on a harness cluster of kwok
// nodes that simulate kubelet resource metrics; a pod with known usage, a
// real exporter (a Prometheus process) scraped through a ScrapeConfig, a
// Helm service. Inventory and usage reach the hub with the cluster's
// values; the scrape, promtool with a viewer token, an alert to a webhook
// and to a real SMTP server (the README's example), remote write; every
// Grafana dashboard query returns data; and a hub outage loses no sample.
func TestTelemetryEndToEnd(t *testing.T) {
	ctx := t.Context()
	repoURL := e2etest.HelmRepo(t, e2etest.SharedChart(t, "podinfo"))
	mp := e2etest.StartMailpit(t)
	hooks := make(chan webhookMessage, 16)
	hookSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m webhookMessage
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		if r.URL.Path != "/tether" {
			t.Errorf("webhook path %s, want /tether (the Secret's URL)", r.URL.Path)
		}
		select {
		case hooks <- m:
		default:
		}
	}))
	t.Cleanup(hookSrv.Close)
	prom := e2etest.StartPrometheus(t, e2etest.PrometheusOptions{OutOfOrderWindow: time.Hour})

	hub := bins.StartHub(t, "--heartbeat", "2s",
		"--remote-write-url", prom.URL+"/api/v1/write",
		"--rule-evaluation-interval", "2s", "--fleet-metrics-interval", "2s")
	api := newHubAPI(t, hub)

	kube := cluster.Start(t, cluster.Options{Name: clusterName, NodeCount: 2, ResourceMetrics: true})
	cs := kube.Clientset
	node0, err := cs.CoreV1().Nodes().Get(ctx, kube.Nodes[0], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodeIP := ""
	for _, a := range node0.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			nodeIP = a.Address
		}
	}
	if ip := net.ParseIP(nodeIP); ip == nil || ip.IsLoopback() {
		t.Fatalf("node %s InternalIP %q: want this machine's non-loopback address (ResourceMetrics)", node0.Name, nodeIP)
	}

	// A real exporter: a Prometheus process serving its own /metrics on the
	// node's address, run by a hostNetwork pod's "container" (kwok gives
	// such a pod the node's IP, and EndpointSlices refuse loopback).
	exporterAddr := net.JoinHostPort(nodeIP, strconv.Itoa(freePort(t, nodeIP)))
	startExporter(t, exporterAddr)
	_, exporterPortStr, _ := net.SplitHostPort(exporterAddr)
	exporterPort, _ := strconv.Atoi(exporterPortStr)

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*corev1.Pod{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "api-0", Namespace: "shop", Labels: map[string]string{"app": "api"},
				Annotations: map[string]string{cluster.AnnotationUsageCPU: "250m", cluster.AnnotationUsageMemory: "64Mi"}},
			Spec: corev1.PodSpec{NodeName: kube.Nodes[1], Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				Containers: []corev1.Container{{Name: "app", Image: "api", Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("128Mi")}}}}},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "exporter-0", Namespace: "shop", Labels: map[string]string{"app": "exporter"}},
			Spec: corev1.PodSpec{NodeName: kube.Nodes[0], HostNetwork: true, Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				Containers: []corev1.Container{{Name: "prometheus", Image: "prometheus",
					Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: int32(exporterPort)}}}}},
		},
	} {
		if _, err := cs.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	agentDir := t.TempDir()
	bins.Start(t, "agent", nil, "tether-agent", "run", "--data-dir", agentDir, "--hub", hub.AgentAddr,
		"--kubeconfig", kube.KubeconfigPath, "--token", hub.Token(t, clusterName),
		"--max-backoff", "2s", "--telemetry-interval", interval.String())
	bins.MustRun(t, hub.Env, "tether", "label", "cluster", clusterName, "tier=edge")
	apply := func(doc string) {
		t.Helper()
		out, errOut, code := bins.RunStdin(t, hub.Env, []byte(doc), "tether", "apply", "-f", "-")
		if code != 0 {
			t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
		}
	}
	apply(fmt.Sprintf(`apiVersion: tether.dev/v1alpha1
kind: HelmRepository
metadata: {name: testrepo, namespace: apps}
spec: {url: %q}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: podinfo-6.14.1, namespace: apps}
spec:
  helm:
    chartSpec: {chart: podinfo, version: 6.14.1, sourceRef: {kind: HelmRepository, name: testrepo}}
---
apiVersion: tether.dev/v1alpha1
kind: MultiClusterService
metadata: {name: edge-apps, namespace: apps}
spec:
  clusterSelector: {matchLabels: {tier: edge}}
  serviceSpec:
    services:
      - {template: podinfo-6.14.1, name: podinfo, namespace: web}
---
apiVersion: tether.dev/v1alpha1
kind: ScrapeConfig
metadata: {name: exporter, namespace: shop}
spec:
  targets:
    - kind: Pod
      namespaces: [shop]
      selector: {matchLabels: {app: exporter}}
      port: metrics
  interval: 5s
  scrapeTimeout: 4s
`, repoURL))

	sel := fmt.Sprintf(`cluster=%q`, clusterName)

	t.Run("inventory and usage", func(t *testing.T) {
		api.waitValue(t, `count(kube_node_info{`+sel+`})`, 3*time.Minute, func(v float64) bool { return v == float64(len(kube.Nodes)) })
		for _, n := range kube.Nodes {
			api.waitValue(t, fmt.Sprintf(`kube_node_status_capacity{%s,node=%q,resource="cpu"}`, sel, n), time.Minute,
				func(v float64) bool { return v == 4 }) // the harness' default node: 4 CPUs
			api.waitValue(t, fmt.Sprintf(`kube_node_status_capacity{%s,node=%q,resource="memory"}`, sel, n), time.Minute,
				func(v float64) bool { return v == 16<<30 })
		}
		api.waitValue(t, `kube_pod_status_phase{`+sel+`,namespace="shop",pod="api-0",phase="Running"}`, 2*time.Minute,
			func(v float64) bool { return v == 1 })
		api.waitValue(t, `kube_pod_container_resource_requests{`+sel+`,namespace="shop",pod="api-0",container="app",resource="cpu"}`, time.Minute,
			func(v float64) bool { return v == 0.25 })
		// The pod's simulated usage: its annotations, through the kubelet
		// resource metrics the agent reads over the node proxy.
		api.waitValue(t, `container_memory_working_set_bytes{`+sel+`,namespace="shop",pod="api-0",container="app"}`, 2*time.Minute,
			func(v float64) bool { return v == 64<<20 })
		// The CPU counter's raw samples rise at 250m: the slope from the
		// first to the last. rate() agrees once the series is older than
		// its window (before, it does not extrapolate past the counter's
		// start at 0 and reads low).
		e2etest.Eventually(t, "api-0's CPU counter rising at 0.25 core-seconds per second", 2*time.Minute, func() (bool, string) {
			res := api.query(t, `container_cpu_usage_seconds_total{`+sel+`,namespace="shop",pod="api-0",container="app"}[1m]`)
			if len(res) != 1 || len(res[0].Values) < 6 {
				return false, fmt.Sprint(res)
			}
			vs := res[0].Values
			first, last := vs[0], vs[len(vs)-1]
			slope := (num(t, last[1]) - num(t, first[1])) / (numAny(last[0]) - numAny(first[0]))
			return math.Abs(slope-0.25) < 0.005, fmt.Sprintf("slope %.4f of %v", slope, vs)
		})
		api.waitValue(t, `rate(container_cpu_usage_seconds_total{`+sel+`,namespace="shop",pod="api-0",container="app"}[1m])`, 2*time.Minute,
			func(v float64) bool { return math.Abs(v-0.25) < 0.01 })
		api.waitValue(t, `count(node_cpu_usage_seconds_total{`+sel+`})`, time.Minute, func(v float64) bool { return v == float64(len(kube.Nodes)) })

		// Every series at the hub has cluster="edge-tel", but the hub's own
		// remote-write health.
		names := map[string]bool{}
		for _, s := range api.query(t, `count by (__name__, cluster) ({__name__=~".+"})`) {
			n := s.Metric["__name__"]
			names[n] = true
			if !strings.HasPrefix(n, "tether_remote_write_") && s.Metric["cluster"] != clusterName {
				t.Errorf("series %s: cluster %q, want %q", n, s.Metric["cluster"], clusterName)
			}
		}
		// The node's usage is its pods' (kwok's simulation sums them).
		nodeCPU, _, _ := api.one(t, fmt.Sprintf(`rate(node_cpu_usage_seconds_total{%s,node=%q}[1m])`, sel, kube.Nodes[1]))
		podsCPU, _, _ := api.one(t, fmt.Sprintf(`sum(rate(container_cpu_usage_seconds_total{%s,node=%q}[1m]))`, sel, kube.Nodes[1]))
		nodeMem, _, _ := api.one(t, fmt.Sprintf(`node_memory_working_set_bytes{%s,node=%q}`, sel, kube.Nodes[1]))
		podsMem, _, _ := api.one(t, fmt.Sprintf(`sum(container_memory_working_set_bytes{%s,node=%q})`, sel, kube.Nodes[1]))
		t.Logf("node %s: cpu %.4f cores (its containers %.4f), memory %.0f bytes (its containers %.0f)", kube.Nodes[1], nodeCPU, podsCPU, nodeMem, podsMem)
		for _, n := range []string{"kube_node_info", "kube_pod_info", "kube_namespace_status_phase", "kube_pod_container_status_running",
			"node_memory_working_set_bytes", "container_memory_working_set_bytes", "container_cpu_usage_seconds_total"} {
			if !names[n] {
				t.Errorf("no %s at the hub (have %v)", n, names)
			}
		}
		st := statusOf(t, agentDir)
		if st.Telemetry.UsageSource != "kubelet" {
			t.Errorf("agent usage source %q, want kubelet", st.Telemetry.UsageSource)
		}

		out := bins.MustRun(t, hub.Env, "tether", "query", `count by (cluster) (kube_node_info)`)
		if !strings.Contains(out, clusterName) || !strings.Contains(out, " 2 ") && !strings.Contains(out, " 2\t") {
			t.Errorf("tether query count by cluster:\n%s", out)
		}
		t.Logf("tether query 'count by (cluster) (kube_node_info)':\n%s", out)
		// top clusters: the nodes' usage (kwok's nodes use what their pods
		// use: api-0's 250m and 64Mi, 1m and 1Mi per other container) and
		// capacity (2 x 4 CPUs, 16Gi).
		podsMemAll, _, _ := api.one(t, `sum(container_memory_working_set_bytes{`+sel+`})`)
		var top []struct {
			Cluster             string
			CPUCores            *float64
			CPUCapacityCores    *float64
			MemoryBytes         *float64
			MemoryCapacityBytes *float64
		}
		e2etest.Eventually(t, "tether top clusters", time.Minute, func() (bool, string) {
			bins.JSON(t, hub.Env, &top, "tether", "top", "clusters", "--window", "1m", "-o", "json")
			if len(top) != 1 || top[0].CPUCores == nil || top[0].CPUCapacityCores == nil || top[0].MemoryBytes == nil || top[0].MemoryCapacityBytes == nil {
				return false, fmt.Sprintf("%+v", top)
			}
			r := top[0]
			return r.Cluster == clusterName && *r.CPUCores > 0.2 && *r.CPUCores < 0.35 && *r.CPUCapacityCores == 8 &&
					*r.MemoryBytes == podsMemAll && *r.MemoryCapacityBytes == 32<<30,
				fmt.Sprintf("%s cpu %v of %v, memory %v of %v; containers' memory %v", r.Cluster, *r.CPUCores, *r.CPUCapacityCores, *r.MemoryBytes, *r.MemoryCapacityBytes, podsMemAll)
		})
		t.Logf("tether top clusters --window 1m:\n%s", bins.MustRun(t, hub.Env, "tether", "top", "clusters", "--window", "1m"))
	})

	t.Run("scraped exporter", func(t *testing.T) {
		job := `job="shop/exporter"`
		api.waitValue(t, `up{`+sel+`,`+job+`,pod="exporter-0",namespace="shop",instance=`+strconv.Quote(exporterAddr)+`}`, 3*time.Minute,
			func(v float64) bool { return v == 1 })
		// One of the exporter's own metrics, as Prometheus exports it.
		api.waitValue(t, `prometheus_build_info{`+sel+`,`+job+`}`, time.Minute, func(v float64) bool { return v == 1 })
		api.waitValue(t, `prometheus_http_requests_total{`+sel+`,`+job+`,handler="/metrics"}`, time.Minute, func(v float64) bool { return v >= 1 })
		e2etest.Eventually(t, "the target in tether describe cluster", time.Minute, func() (bool, string) {
			out := bins.MustRun(t, hub.Env, "tether", "describe", "cluster", clusterName)
			i := strings.Index(out, "Scrape targets:")
			return i >= 0 && strings.Contains(out[i:], "shop/exporter") && strings.Contains(out[i:], "http://"+exporterAddr+"/metrics") &&
				strings.Contains(out[i:], "up"), out
		})
	})

	t.Run("promtool with a viewer token", func(t *testing.T) {
		token := strings.TrimSpace(bins.MustRun(t, hub.Env, "tether", "user", "create", "grafana", "--role", "viewer"))
		httpCfg := e2etest.PromtoolHTTPConfig(t, token, api.caPEM)
		out := e2etest.MustPromtool(t, "query", "instant", "--http.config.file="+httpCfg, api.server, `count(kube_node_info{`+sel+`})`)
		if !strings.HasPrefix(out, "{} => 2 @[") {
			t.Errorf("promtool query instant: %q, want {} => 2 @[...]", out)
		}
		t.Logf("promtool query instant count(kube_node_info): %s", out)
		end := time.Now()
		out = e2etest.MustPromtool(t, "query", "range", "--http.config.file="+httpCfg, "-o", "json",
			"--start="+strconv.FormatInt(end.Add(-time.Minute).Unix(), 10), "--end="+strconv.FormatInt(end.Unix(), 10), "--step=15s",
			api.server, fmt.Sprintf(`kube_node_status_capacity{%s,resource="cpu"}`, sel))
		var mat []matrixSeries
		if err := json.Unmarshal([]byte(out), &mat); err != nil {
			t.Fatalf("promtool query range: %v\n%s", err, out)
		}
		if len(mat) != len(kube.Nodes) {
			t.Fatalf("promtool query range: %d series, want %d: %v", len(mat), len(kube.Nodes), mat)
		}
		for _, s := range mat {
			if len(s.Values) == 0 {
				t.Errorf("series %v: no points", s.Metric)
			}
			for _, p := range s.Values {
				if v := num(t, p[1]); v != 4 {
					t.Errorf("series %v: point %v, want 4", s.Metric, p)
				}
			}
		}
		if _, errOut, code := e2etest.Promtool(t, "query", "instant", "--http.config.file="+e2etest.PromtoolHTTPConfig(t, "wrong", api.caPEM), api.server, `up`); code == 0 ||
			!strings.Contains(errOut, "401") && !strings.Contains(errOut, "unauthorized") {
			t.Errorf("promtool with a wrong token: exit %d, stderr %q; want the 401", code, errOut)
		}
	})

	t.Run("alert reaches a webhook and mail", func(t *testing.T) {
		doc := readmeAlertExample(t)
		for from, to := range map[string]string{"https://hooks.example.net/tether": hookSrv.URL + "/tether", "smtp.example.net:25": mp.SMTPAddr} {
			if !strings.Contains(doc, from) {
				t.Fatalf("README alert example has no %q:\n%s", from, doc)
			}
			doc = strings.ReplaceAll(doc, from, to)
		}
		apply(doc)
		var m webhookMessage
		select {
		case m = <-hooks:
		case <-time.After(3 * time.Minute):
			out, _, _ := bins.Run(t, hub.Env, "tether", "get", "alerts", "-o", "wide")
			t.Fatalf("no webhook message within 3m; tether get alerts:\n%s", out)
		}
		if m.Version != "4" || m.Status != "firing" || m.Receiver != "oncall" || len(m.Alerts) != 1 {
			t.Fatalf("webhook message: %+v", m)
		}
		a := m.Alerts[0]
		if a.Labels["alertname"] != "CPURequestsHigh" || a.Labels["cluster"] != clusterName || a.Labels["severity"] != "warning" ||
			!strings.HasPrefix(a.Annotations["summary"], clusterName+" requests ") {
			t.Fatalf("webhook alert: %+v", a)
		}
		e2etest.Eventually(t, "the alert mail at mailpit", 2*time.Minute, func() (bool, string) {
			ms := mp.Messages(t)
			for _, msg := range ms {
				if strings.Contains(msg.Subject, "CPURequestsHigh") && len(msg.To) == 1 && msg.To[0].Address == "oncall@example.net" {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%+v", ms)
		})
		out := bins.MustRun(t, hub.Env, "tether", "get", "alerts")
		if !strings.Contains(out, "CPURequestsHigh") || !strings.Contains(out, "firing") {
			t.Errorf("tether get alerts:\n%s", out)
		}
		t.Logf("tether get alerts:\n%s", out)
	})

	t.Run("remote write to Prometheus", func(t *testing.T) {
		e2etest.Eventually(t, "the agent's inventory at the remote-write Prometheus", 2*time.Minute, func() (bool, string) {
			v, ok := prom.QueryValue(t, `count(kube_node_info{`+sel+`})`, time.Time{})
			return ok && v == float64(len(kube.Nodes)), fmt.Sprint(v, ok)
		})
		e2etest.Eventually(t, "the pod's usage at the remote-write Prometheus", time.Minute, func() (bool, string) {
			v, ok := prom.QueryValue(t, `container_memory_working_set_bytes{`+sel+`,pod="api-0",container="app"}`, time.Time{})
			return ok && v == 64<<20, fmt.Sprint(v, ok)
		})
	})

	// The services dashboard reads tether_service_status.
	hub.WaitServices(t, 5*time.Minute, map[string]string{clusterName + "/web/podinfo": "Deployed"})
	t.Run("grafana dashboards", func(t *testing.T) { grafanaDashboards(t, api) })

	t.Run("hub outage loses no sample", func(t *testing.T) {
		hubOutage(t, hub, []*hubAPI{api, {server: prom.URL, hc: &http.Client{Timeout: time.Minute}}}, agentDir, kube.Nodes[0])
	})
}

// hubOutage stops the hub, lets the agent collect into its outbox for
// several intervals, restarts the hub and checks every collection of the
// outage arrived: one sample per collection of an inventory series, no
// gap, no duplicate; at the hub (apis[0]) and at the remote-write
// Prometheus (apis[1]), which gets the backlog behind newer samples.
func hubOutage(t *testing.T, hub *e2etest.Hub, apis []*hubAPI, agentDir, node string) {
	sel := fmt.Sprintf(`kube_node_info{cluster=%q,node=%q}`, clusterName, node)
	var before agentStatus
	e2etest.Eventually(t, "the agent connected, nothing pending", time.Minute, func() (bool, string) {
		before = statusOf(t, agentDir)
		return before.Link.State == "Connected" && before.Outbox.Kinds["metrics"].Pending == 0 && before.Telemetry.Collections > 0, before.String()
	})
	hub.Proc.Stop(t)
	stopped := time.Now()

	var first uint64
	e2etest.Eventually(t, "metrics pending growing while the hub is down", 3*time.Minute, func() (bool, string) {
		st := statusOf(t, agentDir)
		p := st.Outbox.Kinds["metrics"].Pending
		if first == 0 {
			first = p
		}
		return p > first && p >= 4 && st.Telemetry.Collections >= before.Telemetry.Collections+5, st.String()
	})
	restarted := time.Now()
	hub.Restart(t)
	var after agentStatus
	e2etest.Eventually(t, "the agent's metrics outbox drained", 3*time.Minute, func() (bool, string) {
		after = statusOf(t, agentDir)
		return after.Link.State == "Connected" && after.Outbox.Kinds["metrics"].Pending == 0, after.String()
	})
	if after.Telemetry.Failures != before.Telemetry.Failures {
		t.Fatalf("collections failed during the outage: %d -> %d (%s)", before.Telemetry.Failures, after.Telemetry.Failures, after.Telemetry.LastError)
	}
	if d := after.Outbox.Kinds["metrics"].Dropped; d != 0 {
		t.Fatalf("the outbox dropped %d metrics entries", d)
	}
	collections := int(after.Telemetry.Collections - before.Telemetry.Collections)
	from, to := before.Telemetry.LastAt, after.Telemetry.LastAt
	t.Logf("outage: hub stopped at %s for %s; the agent made %d collections from %s to %s",
		stopped.Format(time.RFC3339), time.Since(stopped).Round(time.Second), collections, from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))

	for i, api := range apis {
		where := []string{"hub", "remote-write Prometheus"}[i]
		// Raw samples: a range selector in an instant query.
		window := int(time.Since(from).Seconds()) + 30
		var ts []int64
		e2etest.Eventually(t, where+": one sample of "+sel+" per collection", time.Minute, func() (bool, string) {
			res := api.query(t, fmt.Sprintf(`%s[%ds]`, sel, window))
			if len(res) != 1 {
				return false, fmt.Sprintf("%d series: %v", len(res), res)
			}
			ts = ts[:0]
			for _, p := range res[0].Values {
				ms := int64(math.Round(numAny(p[0]) * 1000))
				if ms > from.UnixMilli() && ms <= to.UnixMilli() {
					ts = append(ts, ms)
				}
			}
			return len(ts) == collections, fmt.Sprintf("%d samples in (%s, %s], want %d: %v", len(ts), from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano), collections, ts)
		})
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		distinct := map[int64]bool{}
		prev := from.UnixMilli()
		maxGap := int64(0)
		for _, ms := range ts {
			distinct[ms] = true
			maxGap = max(maxGap, ms-prev)
			prev = ms
		}
		if len(distinct) != len(ts) {
			t.Errorf("%s: %d samples but %d distinct timestamps", where, len(ts), len(distinct))
		}
		if limit := interval.Milliseconds() * 3 / 2; maxGap > limit {
			t.Errorf("%s: largest gap between samples across the outage: %dms, want at most %dms (1.5 x the interval): %v", where, maxGap, limit, ts)
		}
		during := 0
		for _, ms := range ts {
			if ms > stopped.UnixMilli() && ms < restarted.UnixMilli() {
				during++
			}
		}
		if during < 3 {
			t.Errorf("%s: %d samples between the hub's stop and its restart, want at least 3: %v", where, during, ts)
		}
		t.Logf("outage at the %s: %d samples (%d while the hub was down), %d collections, largest gap %dms", where, len(ts), during, collections, maxGap)
	}
}

// freePort is a free TCP port on ip.
func freePort(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startExporter runs a Prometheus process listening on addr, scraping
// nothing, as the exporter of the scrape: its /metrics is real.
func startExporter(t *testing.T, addr string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global: {scrape_interval: 1m}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e2etest.StartProc(t, "exporter", e2etest.PrometheusBinary(t, "prometheus"), nil,
		"--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	e2etest.Eventually(t, "the exporter's /metrics", time.Minute, func() (bool, string) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
}
