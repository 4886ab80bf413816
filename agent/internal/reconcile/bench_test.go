package reconcile_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/agent/internal/apply"
	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/observe"
	"github.com/tetherfleet/tether/agent/internal/reconcile"
	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// BenchmarkTwentyServicesVsHelmCLI: twenty independent podinfo services
// to Deployed through the reconciler (default Config: 4 workers, 2 s
// progress passes, the watcher on; the real Helm engine in process), each
// round a fresh agent cache and fresh namespaces, against twenty
// sequential `helm install --wait` of the same archive and values. Then,
// with the services Deployed, it deletes one Deployment at a time and
// times until it exists again (the watch-triggered repair) and until it
// is available again (its pod Running and ready on a kwok node), then
// edits one Deployment's image at a time and times until the image is the
// chart's again (the repair its update event triggered). The hub plays no
// part. Each round also times one `helm install --wait` of one umbrella
// chart that holds the twenty podinfo charts (aliases p1..p20 of the same
// archive, same values), the other comparison issue 13 asks for. It
// reports medians; it asserts no timing.
//
//	go test -run '^$' -bench TwentyServicesVsHelmCLI -benchtime 2x -timeout 30m ./agent/internal/reconcile/
//
// -args -twenty.concurrency N overrides the reconciler's workers and
// -twenty.cli=false skips the twenty sequential installs (to compare
// worker counts against the umbrella install alone).
var (
	twentyConcurrency = flag.Int("twenty.concurrency", 0, "BenchmarkTwentyServicesVsHelmCLI: reconciler workers (0: DefaultConfig's)")
	twentyCLI         = flag.Bool("twenty.cli", true, "BenchmarkTwentyServicesVsHelmCLI: also time twenty sequential helm installs")
)

func BenchmarkTwentyServicesVsHelmCLI(b *testing.B) {
	const n = 20
	helm := e2etest.HelmCLI(b)
	c := cluster.Start(b, cluster.Options{Name: "reconcile-bench", NodeCount: 2, Logger: slog.New(slog.DiscardHandler)})
	dir := b.TempDir()
	chartPath := e2etest.PackageChartTo(b, e2etest.SharedChart(b, "podinfo"), dir)
	archive, err := os.ReadFile(chartPath)
	if err != nil {
		b.Fatal(err)
	}
	values := []byte("replicaCount: 1\n")
	valuesPath := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(valuesPath, values, 0o644); err != nil {
		b.Fatal(err)
	}
	helmEnv := append(os.Environ(), "HELM_CONFIG_HOME="+filepath.Join(dir, "helm", "config"),
		"HELM_CACHE_HOME="+filepath.Join(dir, "helm", "cache"), "HELM_DATA_HOME="+filepath.Join(dir, "helm", "data"))
	// One chart holding all twenty: aliases of the same podinfo archive.
	umbrella := filepath.Join(dir, "twenty")
	if err := os.MkdirAll(filepath.Join(umbrella, "charts"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(umbrella, "charts", filepath.Base(chartPath)), archive, 0o644); err != nil {
		b.Fatal(err)
	}
	var meta, uvals strings.Builder
	meta.WriteString("apiVersion: v2\nname: twenty\nversion: 0.1.0\ndependencies:\n")
	for j := 1; j <= n; j++ {
		fmt.Fprintf(&meta, "  - {name: podinfo, version: 6.14.1, alias: p%d}\n", j)
		fmt.Fprintf(&uvals, "p%d:\n  replicaCount: 1\n", j)
	}
	if err := os.WriteFile(filepath.Join(umbrella, "Chart.yaml"), []byte(meta.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	uvaluesPath := filepath.Join(dir, "umbrella-values.yaml")
	if err := os.WriteFile(uvaluesPath, []byte(uvals.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	viaUmbrella := func(round int) time.Duration {
		start := time.Now()
		cmd := exec.Command(helm, "install", "twenty", umbrella, "--namespace", fmt.Sprintf("umbrella-%d", round), "--create-namespace",
			"--wait", "--timeout", "5m", "-f", uvaluesPath, "--kubeconfig", c.KubeconfigPath)
		cmd.Env = helmEnv
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("helm install (umbrella): %v\n%s", err, out)
		}
		return time.Since(start)
	}
	viaCLI := func(round int) time.Duration {
		if !*twentyCLI {
			return time.Nanosecond
		}
		start := time.Now()
		for j := range n {
			cmd := exec.Command(helm, "install", "podinfo", chartPath, "--namespace", fmt.Sprintf("cli-%d-%d", round, j), "--create-namespace",
				"--wait", "--timeout", "5m", "-f", valuesPath, "--kubeconfig", c.KubeconfigPath)
			cmd.Env = helmEnv
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("helm install: %v\n%s", err, out)
			}
		}
		return time.Since(start)
	}
	var repairs, redeployed, imageRepairs []time.Duration
	viaTether := func(round int) time.Duration {
		rdir := b.TempDir()
		db, err := cache.Open(filepath.Join(rdir, "agent.db"), cache.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		e, err := apply.New(apply.Config{RESTConfig: c.RESTConfig, Records: db})
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		dg := digestOf(archive)
		if err := db.PutChart(dg, archive); err != nil {
			b.Fatal(err)
		}
		obs, err := observe.New(observe.Config{RESTConfig: c.RESTConfig})
		if err != nil {
			b.Fatal(err)
		}
		var r *reconcile.Reconciler
		w, err := observe.NewWatcher(observe.WatcherConfig{Observer: obs, Records: db,
			OnChange: func(ch observe.Change) { r.ObjectChanged(ch.Service, ch.Object, ch.Spec) }})
		if err != nil {
			b.Fatal(err)
		}
		cfg := reconcile.DefaultConfig()
		if *twentyConcurrency > 0 {
			cfg.Concurrency = *twentyConcurrency
		}
		cfg.Cache, cfg.Engine, cfg.Charts, cfg.Watcher = db, e, cachedCharts{}, w
		if r, err = reconcile.New(cfg); err != nil {
			b.Fatal(err)
		}
		ds := &fleetv1.DesiredState{Revision: 1, Full: true}
		for j := range n {
			ds.Services = append(ds.Services, &fleetv1.Service{Name: "podinfo", Namespace: fmt.Sprintf("tether-%d-%d", round, j),
				ChartDigest: dg, ValuesYaml: values, ValuesHash: "v1"})
		}
		for _, s := range ds.Services {
			if _, err := c.Clientset.CoreV1().Namespaces().Create(b.Context(), nsObject(s.GetNamespace()), metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(b.Context())
		var wg sync.WaitGroup
		defer func() { cancel(); wg.Wait() }()
		allDeployed := func() bool {
			st := r.Statuses()
			if len(st) != n {
				return false
			}
			for _, s := range st {
				if s.GetState() != reconcile.StateDeployed {
					return false
				}
			}
			return true
		}
		wait := func(what string, cond func() bool) {
			deadline := time.Now().Add(5 * time.Minute)
			tick := time.NewTicker(10 * time.Millisecond) // the measurement's granularity
			defer tick.Stop()
			for !cond() {
				if time.Now().After(deadline) {
					b.Fatalf("%s: not within 5m: %v", what, r.Statuses())
				}
				<-tick.C
			}
		}
		start := time.Now()
		if err := r.Desired(ctx, ds); err != nil {
			b.Fatal(err)
		}
		wg.Go(func() { _ = w.Run(ctx) })
		wg.Go(func() { _ = r.Run(ctx) })
		wait("twenty services Deployed", allDeployed)
		took := time.Since(start)
		// Drift: delete one Deployment at a time.
		for j := range 3 {
			ns := ds.Services[j].GetNamespace()
			deps := c.Clientset.AppsV1().Deployments(ns)
			start := time.Now()
			if err := deps.Delete(ctx, "podinfo", metav1.DeleteOptions{}); err != nil {
				b.Fatal(err)
			}
			wait("Deployment back", func() bool {
				d, err := deps.Get(ctx, "podinfo", metav1.GetOptions{})
				return err == nil && d.DeletionTimestamp == nil
			})
			repairs = append(repairs, time.Since(start))
			wait("Deployment available again", func() bool {
				d, err := deps.Get(ctx, "podinfo", metav1.GetOptions{})
				return err == nil && d.Status.AvailableReplicas >= 1
			})
			redeployed = append(redeployed, time.Since(start))
			wait("service Deployed again", allDeployed)
		}
		// Drift: edit one Deployment's image at a time.
		for j := 3; j < 6; j++ {
			deps := c.Clientset.AppsV1().Deployments(ds.Services[j].GetNamespace())
			d, err := deps.Get(ctx, "podinfo", metav1.GetOptions{})
			if err != nil {
				b.Fatal(err)
			}
			want := d.Spec.Template.Spec.Containers[0].Image
			d.Spec.Template.Spec.Containers[0].Image = "example.invalid/podinfo:edited"
			start := time.Now()
			if _, err := deps.Update(ctx, d, metav1.UpdateOptions{}); err != nil {
				b.Fatal(err)
			}
			wait("image repaired", func() bool {
				d, err := deps.Get(ctx, "podinfo", metav1.GetOptions{})
				return err == nil && d.Spec.Template.Spec.Containers[0].Image == want
			})
			imageRepairs = append(imageRepairs, time.Since(start))
			wait("service Deployed again", allDeployed)
		}
		return took
	}
	var cli, tether, one []time.Duration
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			cli = append(cli, viaCLI(i))
			one = append(one, viaUmbrella(i))
			tether = append(tether, viaTether(i))
		} else {
			tether = append(tether, viaTether(i))
			one = append(one, viaUmbrella(i))
			cli = append(cli, viaCLI(i))
		}
	}
	mc, mt := median(cli), median(tether)
	b.Logf("20 x helm install --wait: %v", cli)
	b.Logf("tether, 20 services to Deployed: %v", tether)
	b.Logf("helm install --wait of one chart holding the twenty: %v", one)
	b.Logf("delete Deployment -> back: %v; -> available: %v", repairs, redeployed)
	b.Logf("edit image -> repaired: %v", imageRepairs)
	b.ReportMetric(mc.Seconds(), "s-helm-cli-x20-median")
	b.ReportMetric(mt.Seconds(), "s-tether-20-median")
	b.ReportMetric(mt.Seconds()/mc.Seconds(), "tether/cli")
	b.ReportMetric(median(repairs).Seconds(), "s-drift-back-median")
	b.ReportMetric(slices.Max(repairs).Seconds(), "s-drift-back-max")
	b.ReportMetric(median(redeployed).Seconds(), "s-drift-available-median")
	b.ReportMetric(median(one).Seconds(), "s-helm-umbrella-median")
	b.ReportMetric(mt.Seconds()/median(one).Seconds(), "tether/umbrella")
	b.ReportMetric(median(imageRepairs).Seconds(), "s-image-repair-median")
	b.ReportMetric(slices.Max(imageRepairs).Seconds(), "s-image-repair-max")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func nsObject(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}
