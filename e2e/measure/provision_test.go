package measure

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

// BenchmarkProvision measures the time from `tether apply` of N
// ClusterDeployments on the CAPD in-memory template to each one's phase
// Ready (its CAPI Cluster Available) and to its agent Enrolled, for N=1
// and N=20 at once, and the hub's peak RSS and CPU time while it follows
// them. A real hub (built without -race) against a harness management
// cluster with the real CAPI managers; for each cluster the bench starts
// an agent process with the new cluster's kubeconfig and the token the
// hub installed there, as soon as the hub reports the agent Installed
// (standing in for the agent Deployment's pod, which nothing runs here).
//
//	make e2e-bins
//	TETHER_E2E_BIN_DIR=$PWD/e2e/.bin go test ./e2e/measure -run '^$' -bench BenchmarkProvision -benchtime 1x -timeout 40m
func BenchmarkProvision(b *testing.B) {
	bins, err := e2etest.Build(false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bins.Remove)
	mgmt := cluster.Start(b, cluster.Options{Name: "measure-mgmt", Management: true})
	round := 0
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				round++
				provisionN(b, bins, mgmt, n, fmt.Sprintf("bench-%d-%d", n, round))
				b.StartTimer()
			}
		})
	}
}

const benchTemplate = `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterTemplate
metadata:
  name: capd-in-memory-0-1-0
  namespace: %s
spec:
  helm:
    chartSpec:
      chart: capd-in-memory
      interval: 10m
      version: 0.1.0
      sourceRef:
        kind: HelmRepository
        name: tether-local
`

const benchDeployment = `---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterDeployment
metadata:
  name: %s
  namespace: %s
spec:
  template: capd-in-memory-0-1-0
  config: {workersNumber: 1}
`

func provisionN(b *testing.B, bins *e2etest.Bins, mgmt *cluster.Cluster, n int, ns string) {
	hub := bins.StartHub(b, "--management-kubeconfig", mgmt.KubeconfigPath)
	chartDir := filepath.Join(e2etest.RepoRoot(b), "bundles", "cluster-templates", "capd-in-memory")
	bins.MustRun(b, hub.Env, "tether", "chart", "push", chartDir)
	var doc strings.Builder
	fmt.Fprintf(&doc, benchTemplate, ns)
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("c%02d", i+1)
		fmt.Fprintf(&doc, benchDeployment, names[i], ns)
	}

	stop := make(chan struct{})
	var (
		wg      sync.WaitGroup
		peakRSS int64
	)
	cpu0 := cpuTime(b, hub.Proc.PID())
	wg.Go(func() {
		for {
			if rss, err := cluster.VmRSS(hub.Proc.PID()); err == nil && rss > peakRSS {
				peakRSS = rss
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	})

	start := time.Now()
	if out, errOut, code := bins.RunStdin(b, hub.Env, []byte(doc.String()), "tether", "apply", "-f", "-"); code != 0 {
		b.Fatalf("tether apply: exit %d: %s%s", code, out, errOut)
	}
	ready, enrolled := map[string]time.Duration{}, map[string]time.Duration{}
	started := map[string]bool{}
	e2etest.Eventually(b, fmt.Sprintf("%d clusters Ready and Enrolled", n), 20*time.Minute, func() (bool, string) {
		var list []struct {
			Metadata struct{ Name string }         `json:"metadata"`
			Status   struct{ Phase, Agent string } `json:"status"`
		}
		bins.JSON(b, hub.Env, &list, "tether", "get", "clusterdeployments", "-n", ns, "-o", "json")
		at := time.Since(start)
		var phases []string
		for _, cd := range list {
			name := cd.Metadata.Name
			if cd.Status.Phase == "Ready" && ready[name] == 0 {
				ready[name] = at
			}
			if cd.Status.Agent != "" && !started[name] {
				startAgent(b, bins, hub, mgmt, ns, name)
				started[name] = true
			}
			if cd.Status.Agent == "Enrolled" && enrolled[name] == 0 {
				enrolled[name] = at
			}
			phases = append(phases, name+"="+cd.Status.Phase+"/"+cd.Status.Agent)
		}
		return len(enrolled) == n && len(ready) == n, strings.Join(phases, " ")
	})
	close(stop)
	wg.Wait()
	cpu := cpuTime(b, hub.Proc.PID()) - cpu0

	rp50, rmax := quantiles(ready)
	ep50, emax := quantiles(enrolled)
	b.ReportMetric(rp50.Seconds(), "s-ready-p50")
	b.ReportMetric(rmax.Seconds(), "s-ready-max")
	b.ReportMetric(ep50.Seconds(), "s-enrolled-p50")
	b.ReportMetric(emax.Seconds(), "s-enrolled-max")
	b.ReportMetric(float64(peakRSS)/(1<<20), "MiB-hub-peak-rss")
	b.ReportMetric(cpu.Seconds(), "s-hub-cpu")
	b.Logf("%d clusters: apply->Ready p50 %s max %s; apply->Enrolled p50 %s max %s; hub peak RSS %.0f MiB, CPU %s",
		n, rp50.Round(100*time.Millisecond), rmax.Round(100*time.Millisecond), ep50.Round(100*time.Millisecond), emax.Round(100*time.Millisecond),
		float64(peakRSS)/(1<<20), cpu.Round(10*time.Millisecond))
}

// startAgent starts an agent for the new cluster name with its
// kubeconfig (from the management cluster) and the join token the hub
// installed in it.
func startAgent(b *testing.B, bins *e2etest.Bins, hub *e2etest.Hub, mgmt *cluster.Cluster, ns, name string) {
	var kc corev1.Secret
	if err := mgmt.Client.Get(b.Context(), client.ObjectKey{Namespace: ns, Name: name + "-kubeconfig"}, &kc); err != nil {
		b.Fatal(err)
	}
	kcPath := filepath.Join(b.TempDir(), name+".kubeconfig")
	if err := os.WriteFile(kcPath, kc.Data["value"], 0o600); err != nil {
		b.Fatal(err)
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(kc.Data["value"])
	if err != nil {
		b.Fatal(err)
	}
	wl, err := client.New(rc, client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var tok corev1.Secret
	if err := wl.Get(b.Context(), client.ObjectKey{Namespace: "tether-system", Name: "tether-agent-token"}, &tok); err != nil {
		b.Fatal(err)
	}
	token := string(tok.Data["token"])
	if token == "" {
		// CAPD's in-memory API server keeps stringData as written.
		token = tok.StringData["token"]
	}
	if token == "" {
		b.Fatalf("%s: Secret tether-system/tether-agent-token has no token", name)
	}
	bins.Start(b, "agent-"+ns+"-"+name, nil, "tether-agent", "run", "--data-dir", b.TempDir(), "--hub", hub.AgentAddr,
		"--kubeconfig", kcPath, "--token", token, "--max-backoff", "2s")
}

// quantiles returns the median and the maximum of ds.
func quantiles(ds map[string]time.Duration) (p50, max time.Duration) {
	v := make([]time.Duration, 0, len(ds))
	for _, d := range ds {
		v = append(v, d)
	}
	slices.Sort(v)
	if len(v) == 0 {
		return 0, 0
	}
	return v[(len(v)-1)/2], v[len(v)-1]
}

// cpuTime is a process's user plus system CPU time, from /proc.
func cpuTime(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	// Linux reports in clock ticks of USER_HZ, 100 per second.
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
