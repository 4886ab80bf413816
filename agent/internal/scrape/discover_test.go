package scrape

import (
	"context"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/tetherfleet/tether/e2e/cluster"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// TestDiscoverAndScrapeKwokPodsAndServices runs the scraper against a
// harness cluster: a kwok node whose InternalIP is this machine's address
// runs hostNetwork pods, so their pod IP is that address and the scrape
// reaches a real exporter in this test. (Not 127.0.0.1: EndpointSlices
// refuse loopback addresses.) Pod targets come from status.podIP and the
// container port, service targets from the EndpointSlices the endpoint
// slice controller writes; a pod the selector does not match, and one the
// relabel rules drop, are not scraped.
func TestDiscoverAndScrapeKwokPodsAndServices(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Name: "scrape", Nodes: []cluster.NodeSpec{{Name: "edge-node"}}})
	ctx := t.Context()
	cs := c.Clientset

	// kwok gives hostNetwork pods the node's IP.
	hostIP := hostAddress(t)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, "edge-node", metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: hostIP}, {Type: corev1.NodeHostName, Address: "edge-node"}}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(promhttp.HandlerFor(registry(t), promhttp.HandlerOpts{EnableOpenMetrics: true}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	addr := ln.Addr().String()
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := func(name string, labels map[string]string) {
		t.Helper()
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "web", Labels: labels},
			Spec: corev1.PodSpec{
				NodeName:    "edge-node",
				HostNetwork: true,
				Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				Containers: []corev1.Container{{Name: "app", Image: "exporter",
					Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: int32(port)}}}},
			},
		}
		if _, err := cs.CoreV1().Pods("web").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod("web-0", map[string]string{"app": "web", "team": "payments"})
	pod("web-canary", map[string]string{"app": "web", "track": "canary"}) // dropped by relabelling
	pod("other-0", map[string]string{"app": "other"})                     // not selected
	_, err = cs.CoreV1().Services("web").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-svc", Namespace: "web", Labels: map[string]string{"monitor": "yes"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web", "team": "payments"},
			Ports: []corev1.ServicePort{{Name: "metrics", Port: 80, TargetPort: intstr.FromString("metrics")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	dc, err := dynamic.NewForConfig(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	s, sk := newScraper(t, Config{Kube: dc, FlushInterval: 100 * time.Millisecond, DiscoveryInterval: 200 * time.Millisecond})
	pods := wireConfig("pods")
	pods.Targets = []*fleetv1.ScrapeTarget{{Kind: "Pod", Namespaces: []string{"web"}, LabelSelector: "app=web", Port: "metrics"}}
	pods.RelabelConfigs = []*fleetv1.RelabelConfig{
		rule("drop", "canary", "__meta_kubernetes_pod_label_track"),
		{Separator: ";", Regex: "__meta_kubernetes_pod_label_(team)", Replacement: "$1", Action: "labelmap"},
	}
	svcs := wireConfig("services")
	svcs.Targets = []*fleetv1.ScrapeTarget{{Kind: "Service", LabelSelector: "monitor=yes", Port: "metrics"}}
	s.Update(&fleetv1.Telemetry{ScrapeConfigs: []*fleetv1.ScrapeConfig{pods, svcs}})

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	deadline := time.Now().Add(90 * time.Second)
	for {
		podUp, ok1 := sk.find("up", map[string]string{"job": "acme/pods", "pod": "web-0", "container": "app", "namespace": "web", "team": "payments", "instance": addr})
		svcUp, ok2 := sk.find("up", map[string]string{"job": "acme/services", "service": "web-svc", "pod": "web-0", "namespace": "web", "instance": addr})
		_, ok3 := sk.find("http_requests_total", map[string]string{"job": "acme/pods", "pod": "web-0", "exported_cluster": "spoofed", "cluster": "edge-1"})
		if ok1 && ok2 && ok3 && podUp.GetSamples()[0].GetValue() == 1 && svcUp.GetSamples()[0].GetValue() == 1 {
			break
		}
		if time.Now().After(deadline) {
			p, _ := cs.CoreV1().Pods("web").Get(ctx, "web-0", metav1.GetOptions{})
			t.Fatalf("no scrape of the pod and service targets; pod IP %q phase %s; targets %+v", p.Status.PodIP, p.Status.Phase, s.Targets())
		}
		time.Sleep(50 * time.Millisecond) // polling the sink
	}
	for _, ts := range s.Targets() {
		switch {
		case ts.Labels["pod"] == "web-canary" || ts.Labels["pod"] == "other-0":
			t.Errorf("target %+v should not be scraped", ts)
		case ts.URL == "":
			t.Errorf("config problem %+v", ts)
		case !strings.HasSuffix(ts.URL, addr+"/metrics"):
			t.Errorf("target URL %s", ts.URL)
		}
	}
	// At most MaxTargetsPerConfig targets: the rest are left out and the
	// config says so.
	all, err := compileJob(&fleetv1.ScrapeConfig{Namespace: "acme", Name: "all", Path: "/metrics", Scheme: "http", IntervalSeconds: 5, TimeoutSeconds: 1, SampleLimit: 10,
		Targets: []*fleetv1.ScrapeTarget{{Kind: "Pod", Namespaces: []string{"web"}, LabelSelector: "app=web", Port: portStr}}})
	if err != nil {
		t.Fatal(err)
	}
	d := &discoverer{client: dc, cluster: "edge-1", maxPerJob: 1, pageSize: 1}
	if ts, truncated, err := d.discover(ctx, all); err != nil || len(ts) != 1 || !truncated {
		t.Fatalf("discover with a limit of 1 (pages of 1): %d targets, truncated %v, %v", len(ts), truncated, err)
	}
	d.maxPerJob = 10
	if ts, truncated, err := d.discover(ctx, all); err != nil || len(ts) != 2 || truncated {
		t.Fatalf("discover by port number over pages of 1: %d targets, truncated %v, %v", len(ts), truncated, err)
	}
	// A pod that goes away stops being scraped.
	if err := cs.CoreV1().Pods("web").Delete(ctx, "web-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	for {
		n := 0
		for _, ts := range s.Targets() {
			if ts.Labels["pod"] == "web-0" {
				n++
			}
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleted pod still scraped: %+v", s.Targets())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// hostAddress is a non-loopback IPv4 address of this machine.
func hostAddress(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
			return ipn.IP.String()
		}
	}
	t.Fatalf("this machine has no non-loopback IPv4 address for the kwok node (EndpointSlices refuse 127.0.0.1): %v", addrs)
	return ""
}
