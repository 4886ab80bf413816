package apply_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tetherfleet/tether/agent/internal/apply"
	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

// BenchmarkApplyVsHelmCLI compares the time from nothing to a ready podinfo
// release: `helm install --wait` (the CLI, a new process each time) against
// Engine.Apply + Engine.WaitHealthy with the agent's default Config (2s
// health polls, as Helm's --wait), same chart archive and values, each in a
// fresh namespace of one harness cluster. Rounds alternate which goes
// first. It reports the medians and their ratio (engine / CLI); it asserts
// no timing. The helm CLI is built from helm.sh/helm/v3 v3.22.0 (the
// version the engine links) by `make e2e-bins` into the harness binaries.
//
//	make e2e-bins && go test -run '^$' -bench ApplyVsHelmCLI -benchtime 8x -timeout 30m ./agent/internal/apply/
func BenchmarkApplyVsHelmCLI(b *testing.B) {
	helm := e2etest.HelmCLI(b)
	c := cluster.Start(b, cluster.Options{Name: "apply-bench", NodeCount: 2, Logger: slog.New(slog.DiscardHandler)})
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
	cfg := apply.DefaultConfig()
	cfg.RESTConfig = c.RESTConfig
	db, err := cache.Open(filepath.Join(dir, "agent.db"), cache.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	cfg.Records = db
	e, err := apply.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })

	// Helm's own state stays in the benchmark's folder, not ~/.config.
	helmEnv := append(os.Environ(), "HELM_CONFIG_HOME="+filepath.Join(dir, "helm", "config"),
		"HELM_CACHE_HOME="+filepath.Join(dir, "helm", "cache"), "HELM_DATA_HOME="+filepath.Join(dir, "helm", "data"))
	viaCLI := func(ns string) time.Duration {
		start := time.Now()
		cmd := exec.Command(helm, "install", "podinfo", chartPath, "--namespace", ns, "--create-namespace",
			"--wait", "--timeout", "5m", "-f", valuesPath, "--kubeconfig", c.KubeconfigPath)
		cmd.Env = helmEnv
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("helm install in %s: %v\n%s", ns, err, out)
		}
		return time.Since(start)
	}
	var applied []time.Duration // Apply alone, before WaitHealthy
	viaEngine := func(ns string) time.Duration {
		ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		if _, err := e.Apply(ctx, apply.Release{Name: "podinfo", Namespace: ns, Chart: archive, ValuesYAML: values}); err != nil {
			b.Fatal(err)
		}
		applied = append(applied, time.Since(start))
		if _, err := e.WaitHealthy(ctx, "podinfo", ns, 5*time.Minute); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}

	var cli, engine []time.Duration
	for i := 0; b.Loop(); i++ {
		cliNS, engineNS := fmt.Sprintf("cli-%d", i), fmt.Sprintf("engine-%d", i)
		if i%2 == 0 {
			cli = append(cli, viaCLI(cliNS))
			engine = append(engine, viaEngine(engineNS))
		} else {
			engine = append(engine, viaEngine(engineNS))
			cli = append(cli, viaCLI(cliNS))
		}
	}
	mc, me := benchMedian(cli), benchMedian(engine)
	b.Logf("helm install --wait: %v", cli)
	b.Logf("Engine.Apply+WaitHealthy: %v", engine)
	b.ReportMetric(mc.Seconds(), "s-helm-cli-median")
	b.ReportMetric(me.Seconds(), "s-engine-median")
	b.ReportMetric(me.Seconds()/mc.Seconds(), "engine/cli")
	b.ReportMetric(benchMedian(applied).Seconds(), "s-engine-apply-only-median")
}

func benchMedian(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
