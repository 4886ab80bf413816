package rollouts

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/e2etest"
)

var benchAgents = flag.Int("fleet.agents", 10000, "BenchmarkFleetRollout: simulated agents")

// procStat reads a process's CPU time (utime+stime) and its current and
// peak resident memory.
func procStat(t testing.TB, pid int) (cpu time.Duration, rssKiB, hwmKiB int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.Atoi(fields[11])
	st, _ := strconv.Atoi(fields[12])
	cpu = time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			rssKiB, _ = strconv.Atoi(f[1])
		}
		if len(f) >= 2 && f[0] == "VmHWM:" {
			hwmKiB, _ = strconv.Atoi(f[1])
		}
	}
	return cpu, rssKiB, hwmKiB
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// rolloutTimes applies doc at t0 and waits until every agent holds chart
// version for service name in its (in-memory) cache, sampling the hub's
// resident memory; it returns each agent's delay from t0, the hub CPU
// spent, and the peak RSS seen.
func (f *fleet) rolloutTimes(b *testing.B, name, version, doc string) (delays []time.Duration, total, cpu time.Duration, peakKiB int) {
	b.Helper()
	pid := f.hub.Proc.PID()
	cpu0, _, _ := procStat(b, pid)
	t0 := time.Now()
	f.apply(b, doc)
	var as map[string]Agent
	e2etest.Eventually(b, "every agent holds "+version, 30*time.Minute, func() (bool, string) {
		_, rss, _ := procStat(b, pid)
		peakKiB = max(peakKiB, rss)
		as = f.mustAgents(b)
		n := 0
		for _, a := range as {
			if v, _ := a.Service("apps", name); v == version {
				n++
			}
		}
		return n == len(as), fmt.Sprintf("%d of %d hold %s", n, len(as), version)
	})
	total = time.Since(t0)
	cpu1, _, _ := procStat(b, pid)
	for _, a := range as {
		delays = append(delays, a.DesiredAt.Sub(t0))
	}
	return delays, total, cpu1 - cpu0, peakKiB
}

// BenchmarkFleetRollout: N simulated agents (default 10,000) on one hub
// process. Phases: strategy All (time until each agent holds the new
// revision, p50/p99; hub CPU and peak RSS), Progressive at 10%, a hub
// restart (time until every agent reconnected and resynced, arrival
// histogram, peak RSS), and the hub's RSS per idle connected agent.
// Run with -benchtime 1x; see docs/BENCHMARKS.md.
func BenchmarkFleetRollout(b *testing.B) {
	for range b.N {
		benchFleetRollout(b, *benchAgents)
	}
}

func benchFleetRollout(b *testing.B, n int) {
	pid0 := 0
	f := startFleetBench(b, n)
	pid0 = f.hub.Proc.PID()
	_, idleBase, _ := procStat(b, pid0)
	b.Logf("hub RSS with %d agents connected and idle: %d KiB (%.1f KiB/agent, whole process / N)", n, idleBase, float64(idleBase)/float64(n))
	b.ReportMetric(float64(idleBase)/float64(n), "hub-rss-KiB/idle-agent")
	f.pushCharts(b, "1.0.0", "2.0.0", "3.0.0")

	all := "strategy: All\nmaxConcurrency: 100%\nminSuccessTime: 0s"
	f.rolloutTimes(b, "bench", "1.0.0", mcs("bench", "1.0.0", all)) // first install: not the figure
	f.waitRollout(b, "bench", "bench", "revision 1 complete", 30*time.Minute, func(r *Record) bool { return r.Phase == "Complete" })
	d, total, cpu, peak := f.rolloutTimes(b, "bench", "2.0.0", mcs("bench", "2.0.0", all))
	b.Logf("All, %d agents: new revision in every cache after %s; p50 %s p99 %s; hub CPU %s; hub peak RSS %d MiB",
		n, total.Round(time.Millisecond), quantile(d, .5).Round(time.Millisecond), quantile(d, .99).Round(time.Millisecond), cpu, peak/1024)
	b.ReportMetric(quantile(d, .5).Seconds(), "all-p50-s")
	b.ReportMetric(quantile(d, .99).Seconds(), "all-p99-s")
	b.ReportMetric(cpu.Seconds(), "all-hub-cpu-s")
	b.ReportMetric(float64(peak)/1024, "all-hub-peak-MiB")
	f.waitRollout(b, "bench", "bench", "revision 2 complete", 30*time.Minute, func(r *Record) bool { return r.Phase == "Complete" })

	d, total, cpu, peak = f.rolloutTimes(b, "bench", "3.0.0", mcs("bench", "3.0.0", "strategy: Progressive\nmaxConcurrency: 10%\nminSuccessTime: 0s"))
	b.Logf("Progressive 10%%, %d agents: every cache after %s; p50 %s p99 %s; hub CPU %s; hub peak RSS %d MiB",
		n, total.Round(time.Millisecond), quantile(d, .5).Round(time.Millisecond), quantile(d, .99).Round(time.Millisecond), cpu, peak/1024)
	b.ReportMetric(total.Seconds(), "progressive-total-s")
	b.ReportMetric(cpu.Seconds(), "progressive-hub-cpu-s")
	b.ReportMetric(float64(peak)/1024, "progressive-hub-peak-MiB")
	f.waitRollout(b, "bench", "bench", "revision 3 complete", 30*time.Minute, func(r *Record) bool { return r.Phase == "Complete" })

	// Restart: SIGTERM, start again; every agent reconnects and resyncs
	// (its held revision is the hub's).
	before := f.mustAgents(b)
	f.hub.Proc.Stop(b)
	t0 := time.Now()
	f.hub.Restart(b)
	pid := f.hub.Proc.PID()
	peak = 0
	var as map[string]Agent
	e2etest.Eventually(b, "every agent reconnected and resynced", 30*time.Minute, func() (bool, string) {
		_, rss, _ := procStat(b, pid)
		peak = max(peak, rss)
		as = f.mustAgents(b)
		up := 0
		for c, a := range as {
			if a.Connected && a.Connects > before[c].Connects && a.Revision >= before[c].Revision {
				up++
			}
		}
		return up == len(as), fmt.Sprintf("%d of %d back", up, len(as))
	})
	total = time.Since(t0)
	_, _, hwm := procStat(b, pid)
	hist := map[int]int{}
	var arr []time.Duration
	for _, a := range as {
		s := a.ConnectedAt.Sub(t0)
		arr = append(arr, s)
		hist[int(s/time.Second)]++
	}
	var hb strings.Builder
	for _, k := range slices.Sorted(mapKeysInt(hist)) {
		fmt.Fprintf(&hb, "  %3d-%3ds %6d %s\n", k, k+1, hist[k], strings.Repeat("#", max(1, hist[k]*60/len(as))))
	}
	b.Logf("restart with %d agents: all reconnected and resynced %s after the restart began (p50 %s, p99 %s); hub peak RSS %d MiB (VmHWM %d MiB)\narrivals (since the restart began):\n%s",
		n, total.Round(time.Millisecond), quantile(arr, .5).Round(time.Millisecond), quantile(arr, .99).Round(time.Millisecond), peak/1024, hwm/1024, hb.String())
	// Bytes on the wire per no-change reconnect: the new sessions'
	// counters (TLS records included, resumed handshakes; heartbeats
	// since the reconnect too, one per --heartbeat at most).
	var cs []struct {
		BytesIn  uint64 `json:"bytesIn"`
		BytesOut uint64 `json:"bytesOut"`
	}
	if err := f.con.do("GET", "/v1/clusters", nil, &cs); err != nil {
		b.Fatal(err)
	}
	var in, out uint64
	for _, c := range cs {
		in, out = in+c.BytesIn, out+c.BytesOut
	}
	b.Logf("no-change reconnect: %.0f bytes in, %.0f bytes out per agent (hub's session counters)", float64(in)/float64(len(cs)), float64(out)/float64(len(cs)))
	b.ReportMetric(float64(in+out)/float64(len(cs)), "reconnect-B/agent")
	b.ReportMetric(total.Seconds(), "restart-resync-s")
	b.ReportMetric(float64(hwm)/1024, "restart-hub-peak-MiB")
}

func mapKeysInt(m map[int]int) func(func(int) bool) {
	return func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func startFleetBench(b *testing.B, n int) *fleet {
	b.Helper()
	return startFleet(b, bins, fleetOptions{agents: n, deployDelay: 100 * time.Millisecond})
}
