package desired

import (
	"context"
	"slices"
	"testing"
	"time"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

func scrapeYAML(name, selector, interval string) string {
	return `apiVersion: tether.dev/v1alpha1
kind: ScrapeConfig
metadata: {name: ` + name + `, namespace: acme}
spec:
  clusterSelector: ` + selector + `
  interval: ` + interval + `
  targets: [{kind: Pod, selector: {matchLabels: {app: web}}, port: metrics}]
  metricRelabelConfigs: [{source_labels: [__name__], regex: 'go_.*', action: drop}]
`
}

func scrapeNames(t *fleetv1.Telemetry) []string {
	var out []string
	for _, c := range t.GetScrapeConfigs() {
		out = append(out, c.GetNamespace()+"/"+c.GetName())
	}
	return out
}

// TestScrapeConfigsReachClustersBySelector: a ScrapeConfig goes into the
// desired state of the clusters its selector matches, a full state
// carries the whole set, a delta carries it only when it changed after
// the agent's revision, and a cluster relabelled out of the selector gets
// a delta with the set without it.
func TestScrapeConfigsReachClustersBySelector(t *testing.T) {
	e := newEnv(t)
	e.putCluster("edge-1", map[string]string{"tier": "edge"})
	e.putCluster("core-1", map[string]string{"tier": "core"})
	e.apply(scrapeYAML("web", "{matchLabels: {tier: edge}}", "15s"))
	e.apply(scrapeYAML("all", "{}", "1m"))
	e.recompile()

	ctx := context.Background()
	full, err := e.c.Delta(ctx, "edge-1", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := scrapeNames(full.GetTelemetry()); !full.GetFull() || !slices.Equal(got, []string{"acme/all", "acme/web"}) {
		t.Fatalf("edge-1 full state scrape configs %v (full %v)", got, full.GetFull())
	}
	web := full.GetTelemetry().GetScrapeConfigs()[1]
	if web.GetIntervalSeconds() != 15 || web.GetTargets()[0].GetLabelSelector() != "app=web" || web.GetMetricRelabelConfigs()[0].GetAction() != "drop" || web.GetSampleLimit() != 10000 {
		t.Fatalf("wire config %v", web)
	}
	core, err := e.c.Delta(ctx, "core-1", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := scrapeNames(core.GetTelemetry()); !slices.Equal(got, []string{"acme/all"}) {
		t.Fatalf("core-1 scrape configs %v", got)
	}
	have := full.GetRevision()
	if d, err := e.c.Delta(ctx, "edge-1", have, full.GetEpoch()); err != nil || d != nil {
		t.Fatalf("up-to-date agent got %v, %v", d, err)
	}

	// A change to a service alone: the delta leaves telemetry out
	// (unchanged).
	e.apply(base)
	e.resolve("nginx", "sha256:n1")
	e.apply(mcsYAML("[{template: nginx, name: web}]"))
	e.recompile()
	d, err := e.c.Delta(ctx, "edge-1", have, full.GetEpoch())
	if err != nil || d == nil {
		t.Fatalf("delta after a service change: %v, %v", d, err)
	}
	if d.Telemetry != nil || len(d.GetServices()) != 1 {
		t.Fatalf("service-only delta carries telemetry %v (services %v)", d.GetTelemetry(), names(d.GetServices()))
	}
	have = d.GetRevision()

	// A changed ScrapeConfig: the delta carries the whole set.
	e.apply(scrapeYAML("web", "{matchLabels: {tier: edge}}", "20s"))
	e.recompile()
	d, err = e.c.Delta(ctx, "edge-1", have, full.GetEpoch())
	if err != nil || d == nil || d.Telemetry == nil {
		t.Fatalf("delta after a ScrapeConfig change: %v, %v", d, err)
	}
	if got := scrapeNames(d.GetTelemetry()); !slices.Equal(got, []string{"acme/all", "acme/web"}) || d.GetTelemetry().GetScrapeConfigs()[1].GetIntervalSeconds() != 20 {
		t.Fatalf("delta scrape configs %v", d.GetTelemetry())
	}
	// core-1 did not change.
	if st := e.state("core-1"); st.Revision != core.GetRevision() {
		t.Fatalf("core-1 revision moved from %d to %d on a config it does not match", core.GetRevision(), st.Revision)
	}
	have = d.GetRevision()

	// Relabelled out of the selector: the set without "web".
	e.putCluster("edge-1", map[string]string{"tier": "core"})
	e.recompile()
	d, err = e.c.Delta(ctx, "edge-1", have, full.GetEpoch())
	if err != nil || d == nil || d.Telemetry == nil {
		t.Fatalf("delta after relabelling: %v, %v", d, err)
	}
	if got := scrapeNames(d.GetTelemetry()); !slices.Equal(got, []string{"acme/all"}) {
		t.Fatalf("after relabelling: %v", got)
	}
	have = d.GetRevision()

	// Deleting the last ScrapeConfig sends an empty set.
	if err := e.repo.Delete(ctx, "ScrapeConfig", "acme", "all"); err != nil {
		t.Fatal(err)
	}
	e.recompile()
	d, err = e.c.Delta(ctx, "edge-1", have, full.GetEpoch())
	if err != nil || d == nil || d.Telemetry == nil || len(d.GetTelemetry().GetScrapeConfigs()) != 0 {
		t.Fatalf("delta after delete: %v, %v", d, err)
	}
	// What the agent merges is what the hub holds.
	next, _, err := fleetv1.Merge(full, d)
	if err != nil || len(next.GetTelemetry().GetScrapeConfigs()) != 0 {
		t.Fatalf("merged: %v, %v", next.GetTelemetry(), err)
	}
}

// TestScrapeConfigChangeWakesRun: applying a ScrapeConfig notifies the
// matching cluster's subscribers (the gateway pushes to the agent).
func TestScrapeConfigChangeWakesRun(t *testing.T) {
	e := newEnv(t)
	e.putCluster("edge-1", map[string]string{"tier": "edge"})
	ctx, cancel := context.WithCancel(e.ctx)
	ch, unsubscribe := e.c.Subscribe("edge-1")
	defer unsubscribe()
	done := make(chan error, 1)
	go func() { done <- e.c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	wait := func(what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("no notification: %s", what)
		}
	}
	wait("initial state")
	e.apply(scrapeYAML("web", "{matchLabels: {tier: edge}}", "15s"))
	wait("scrape config applied")
	if st := e.state("edge-1"); len(st.ScrapeConfigs) != 1 || st.TelemetryRevision != st.Revision {
		t.Fatalf("state = %+v", st)
	}
}
