package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
)

// promSample is one value of a query result: [<unix seconds>, "<value>"].
type promSample [2]any

func (s promSample) time() time.Time {
	f, _ := s[0].(float64)
	return time.UnixMilli(int64(math.Round(f * 1000))).UTC()
}

func (s promSample) value() string { v, _ := s[1].(string); return v }

func (s promSample) float() float64 {
	f, err := strconv.ParseFloat(s.value(), 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

type promSeries struct {
	Metric map[string]string `json:"metric"`
	Value  promSample        `json:"value,omitempty"`
	Values []promSample      `json:"values,omitempty"`
}

// metricName formats a label set as PromQL does: name{a="b", ...}.
func metricName(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "__name__" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.Quote(m[k])
	}
	if len(parts) == 0 && m["__name__"] != "" {
		return m["__name__"]
	}
	return m["__name__"] + "{" + strings.Join(parts, ", ") + "}"
}

// promTable renders a query result as a table: one row per sample.
func promTable(d api.PromData) (table, error) {
	switch d.ResultType {
	case "vector", "matrix":
		var ss []promSeries
		if err := json.Unmarshal(d.Result, &ss); err != nil {
			return table{}, fmt.Errorf("decode %s result: %w", d.ResultType, err)
		}
		t := table{headers: []string{"METRIC", "VALUE", "TIME"}, wide: 3}
		for _, s := range ss {
			if d.ResultType == "vector" {
				t.rows = append(t.rows, []string{metricName(s.Metric), s.Value.value(), s.Value.time().Format(time.RFC3339Nano)})
				continue
			}
			for _, v := range s.Values {
				t.rows = append(t.rows, []string{metricName(s.Metric), v.value(), v.time().Format(time.RFC3339Nano)})
			}
		}
		return t, nil
	case "scalar", "string":
		var s promSample
		if err := json.Unmarshal(d.Result, &s); err != nil {
			return table{}, fmt.Errorf("decode %s result: %w", d.ResultType, err)
		}
		return table{headers: []string{strings.ToUpper(d.ResultType), "TIME"}, wide: 2, rows: [][]string{{s.value(), s.time().Format(time.RFC3339Nano)}}}, nil
	}
	return table{}, fmt.Errorf("unknown result type %q", d.ResultType)
}

// printProm prints a query's answer: its data as json or yaml (the
// Prometheus API's resultType and result), else a table; warnings go to
// stderr.
func printProm(g *globals, out *outputFlag, resp api.PromResponse) error {
	for _, w := range resp.Warnings {
		fmt.Fprintf(g.stderr, "Warning: %s\n", w)
	}
	for _, i := range resp.Infos {
		fmt.Fprintf(g.stderr, "Info: %s\n", i)
	}
	if out.format == "json" || out.format == "yaml" {
		var v any
		if err := json.Unmarshal(resp.Data.Result, &v); err != nil {
			return fmt.Errorf("decode result: %w", err)
		}
		return out.print(g.stdout, map[string]any{"resultType": resp.Data.ResultType, "result": v}, nil)
	}
	t, err := promTable(resp.Data)
	if err != nil {
		return err
	}
	if len(t.rows) == 0 {
		fmt.Fprintln(g.stderr, "No samples.")
		return nil
	}
	return out.print(g.stdout, nil, func() table { return t })
}

// parseCLITime parses a time flag: now, an RFC 3339 date, Unix seconds,
// or a negative duration from now (-1h, -30m).
func parseCLITime(flag, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "" || s == "now":
		return now, nil
	case strings.HasPrefix(s, "-") && len(s) > 1 && (s[1] < '0' || s[1] > '9' || strings.ContainsAny(s, "smhdwy")):
		d, err := parseCLIDuration(s[1:])
		if err != nil {
			return time.Time{}, usageError{fmt.Errorf("--%s %q: %v", flag, s, err)}
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) && math.Abs(f) < 1e12 {
		return time.UnixMilli(int64(math.Round(f * 1000))), nil
	}
	return time.Time{}, usageError{fmt.Errorf("--%s %q: want now, an RFC 3339 time (2026-12-02T10:00:00Z), Unix seconds, or -DURATION (-1h)", flag, s)}
}

// parseCLIDuration takes Go durations and Prometheus' (1d, 1w).
func parseCLIDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	n, unit := strings.TrimRight(s, "dwy"), strings.TrimLeft(s, "0123456789")
	v, err := strconv.Atoi(n)
	if err != nil || len(unit) != 1 || v < 0 {
		return 0, fmt.Errorf("not a duration (want e.g. 30s, 5m, 1h, 2d)")
	}
	return time.Duration(v) * map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour, "y": 365 * 24 * time.Hour}[unit], nil
}

func newQueryCmd(g *globals) *cobra.Command {
	var (
		out outputFlag
		at  string
	)
	cmd := &cobra.Command{
		Use:   "query EXPR",
		Short: "Evaluate a PromQL expression over the fleet's metrics at one time",
		Long: `Evaluate a PromQL expression at one time (default now) over the metrics the
agents sent to the hub; every series carries cluster="<name>". The hub
answers the Prometheus HTTP API, so Grafana and promtool can read it too.

Exit codes: 0 answered (even with no samples), 1 the hub refused or failed
the query, 2 bad flags or arguments.`,
		Example: `  tether query 'up'
  tether query 'sum by (cluster) (node_memory_working_set_bytes)' --time -1h
  tether query 'kube_node_status_capacity{resource="cpu"}' -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(1, "one PromQL expression")(cmd, args); err != nil {
				return err
			}
			return out.validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := parseCLITime("time", at, time.Now())
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			if at == "" {
				t = time.Time{}
			}
			resp, err := c.PromQuery(ctx, args[0], t)
			if err != nil {
				return fmt.Errorf("query %q: %w", args[0], err)
			}
			return printProm(g, &out, resp)
		},
	}
	cmd.Flags().StringVar(&at, "time", "", "evaluation time: now, RFC 3339, Unix seconds or -DURATION (default the hub's now)")
	addOutputFlag(cmd, &out, "json", "yaml")
	return cmd
}

func newQueryRangeCmd(g *globals) *cobra.Command {
	var (
		out        outputFlag
		start, end string
		step       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "query-range EXPR",
		Short: "Evaluate a PromQL expression over a time range",
		Long: `Evaluate a PromQL expression every --step from --start to --end (default:
the last hour, about 250 steps) over the metrics the agents sent to the hub.
The hub refuses more than 11,000 steps, as Prometheus does.

Exit codes: 0 answered (even with no samples), 1 the hub refused or failed
the query, 2 bad flags or arguments.`,
		Example: `  tether query-range 'sum by (cluster) (rate(node_cpu_usage_seconds_total[5m]))' --start -6h --step 5m
  tether query-range 'up' --start 2026-12-01T00:00:00Z --end 2026-12-02T00:00:00Z --step 1h -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(1, "one PromQL expression")(cmd, args); err != nil {
				return err
			}
			if step < 0 {
				return usageError{fmt.Errorf("--step %s: must be positive", step)}
			}
			return out.validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			if start == "" {
				start = "-1h"
			}
			s, err := parseCLITime("start", start, now)
			if err != nil {
				return err
			}
			e, err := parseCLITime("end", end, now)
			if err != nil {
				return err
			}
			if e.Before(s) {
				return usageError{fmt.Errorf("--end %s is before --start %s", e.Format(time.RFC3339), s.Format(time.RFC3339))}
			}
			if step == 0 {
				step = max(time.Second, e.Sub(s)/250).Truncate(time.Second)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			resp, err := c.PromQueryRange(ctx, args[0], s, e, step)
			if err != nil {
				return fmt.Errorf("query-range %q: %w", args[0], err)
			}
			return printProm(g, &out, resp)
		},
	}
	cmd.Flags().StringVar(&start, "start", "", "range start: now, RFC 3339, Unix seconds or -DURATION (default -1h)")
	cmd.Flags().StringVar(&end, "end", "", "range end, as --start (default now)")
	cmd.Flags().DurationVar(&step, "step", 0, "resolution (default: the range / 250, at least 1s)")
	addOutputFlag(cmd, &out, "json", "yaml")
	return cmd
}

// ClusterUsage is one row of `tether top clusters`.
type ClusterUsage struct {
	Cluster string `json:"cluster"`
	// CPUCores is the nodes' CPU usage, in cores; CPUCapacity their
	// capacity. NaN (absent in json) when the cluster sent no such series.
	CPUCores            *float64 `json:"cpuCores,omitempty"`
	CPUCapacityCores    *float64 `json:"cpuCapacityCores,omitempty"`
	MemoryBytes         *float64 `json:"memoryBytes,omitempty"`
	MemoryCapacityBytes *float64 `json:"memoryCapacityBytes,omitempty"`
}

// The series `top clusters` reads: the agents export node usage as the
// kubelet's resource metrics do and capacity as kube-state-metrics does.
const (
	topCPU    = `sum by (cluster) (rate(node_cpu_usage_seconds_total[%s]))`
	topCPUCap = `sum by (cluster) (kube_node_status_capacity{resource="cpu"})`
	topMem    = `sum by (cluster) (node_memory_working_set_bytes)`
	topMemCap = `sum by (cluster) (kube_node_status_capacity{resource="memory"})`
)

func newTopCmd(g *globals) *cobra.Command {
	top := &cobra.Command{
		Use:   "top",
		Short: "Show resource usage",
		Args:  exactArgs(0, "a subcommand (clusters)"),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var (
		out    outputFlag
		window time.Duration
		sortBy string
	)
	clusters := &cobra.Command{
		Use:     "clusters",
		Aliases: []string{"cluster"},
		Short:   "Show CPU and memory usage per cluster, like kubectl top nodes",
		Long: `Show each cluster's CPU and memory usage summed over its nodes, and the
share of its nodes' capacity, from the metrics its agent sends:
node_cpu_usage_seconds_total (rate over --window), node_memory_working_set_bytes
and kube_node_status_capacity. A cluster whose agent sent none of them is
not listed.

Exit codes: 0 shown (an empty fleet prints a note), 1 the hub failed, 2 bad
flags or arguments.`,
		Example: `  tether top clusters
  tether top clusters --sort-by memory -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(0, "no arguments")(cmd, args); err != nil {
				return err
			}
			if window < time.Second {
				return usageError{fmt.Errorf("--window %s: want at least 1s", window)}
			}
			if sortBy != "" && sortBy != "cpu" && sortBy != "memory" && sortBy != "name" {
				return usageError{fmt.Errorf("--sort-by %q: want name, cpu or memory", sortBy)}
			}
			return out.validate()
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			rows, err := topClusters(ctx, c, window)
			if err != nil {
				return err
			}
			sortUsage(rows, sortBy)
			if len(rows) == 0 && out.format == "" {
				fmt.Fprintln(g.stderr, "No cluster has sent node usage or capacity metrics yet.")
				return nil
			}
			return out.print(g.stdout, rows, func() table { return usageTable(rows) })
		},
	}
	clusters.Flags().DurationVar(&window, "window", 5*time.Minute, "rate window of the CPU usage")
	clusters.Flags().StringVar(&sortBy, "sort-by", "name", "sort by name, cpu or memory (largest first)")
	addOutputFlag(clusters, &out, "json", "yaml")
	top.AddCommand(clusters)
	return top
}

func topClusters(ctx context.Context, c *api.Client, window time.Duration) ([]ClusterUsage, error) {
	byName := map[string]*ClusterUsage{}
	w := strconv.FormatInt(int64(window/time.Second), 10) + "s"
	for _, q := range []struct {
		expr string
		set  func(*ClusterUsage, *float64)
	}{
		{fmt.Sprintf(topCPU, w), func(u *ClusterUsage, v *float64) { u.CPUCores = v }},
		{topCPUCap, func(u *ClusterUsage, v *float64) { u.CPUCapacityCores = v }},
		{topMem, func(u *ClusterUsage, v *float64) { u.MemoryBytes = v }},
		{topMemCap, func(u *ClusterUsage, v *float64) { u.MemoryCapacityBytes = v }},
	} {
		resp, err := c.PromQuery(ctx, q.expr, time.Time{})
		if err != nil {
			return nil, fmt.Errorf("top clusters: query %s: %w", q.expr, err)
		}
		var ss []promSeries
		if err := json.Unmarshal(resp.Data.Result, &ss); err != nil || resp.Data.ResultType != "vector" {
			return nil, fmt.Errorf("top clusters: query %s: want a vector, got %s (%v)", q.expr, resp.Data.ResultType, err)
		}
		for _, s := range ss {
			name := s.Metric["cluster"]
			if name == "" {
				continue
			}
			u, ok := byName[name]
			if !ok {
				u = &ClusterUsage{Cluster: name}
				byName[name] = u
			}
			v := s.Value.float()
			q.set(u, &v)
		}
	}
	out := make([]ClusterUsage, 0, len(byName))
	for _, u := range byName {
		out = append(out, *u)
	}
	return out, nil
}

func sortUsage(rows []ClusterUsage, by string) {
	val := func(p *float64) float64 {
		if p == nil {
			return -1
		}
		return *p
	}
	sort.Slice(rows, func(i, j int) bool {
		switch by {
		case "cpu":
			if a, b := val(rows[i].CPUCores), val(rows[j].CPUCores); a != b {
				return a > b
			}
		case "memory":
			if a, b := val(rows[i].MemoryBytes), val(rows[j].MemoryBytes); a != b {
				return a > b
			}
		}
		return rows[i].Cluster < rows[j].Cluster
	})
}

func usageTable(rows []ClusterUsage) table {
	t := table{headers: []string{"CLUSTER", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"}, wide: 5}
	for _, u := range rows {
		t.rows = append(t.rows, []string{u.Cluster, fmtCores(u.CPUCores), fmtPercent(u.CPUCores, u.CPUCapacityCores, 1000), fmtBytes(u.MemoryBytes), fmtPercent(u.MemoryBytes, u.MemoryCapacityBytes, 1)})
	}
	return t
}

// fmtCores formats cores as kubectl does: millicores, 250m.
func fmtCores(v *float64) string {
	if v == nil || math.IsNaN(*v) {
		return "<unknown>"
	}
	return strconv.FormatInt(int64(math.Round(*v*1000)), 10) + "m"
}

// fmtBytes formats bytes as kubectl does: Mi.
func fmtBytes(v *float64) string {
	if v == nil || math.IsNaN(*v) {
		return "<unknown>"
	}
	return strconv.FormatInt(int64(math.Round(*v/(1<<20))), 10) + "Mi"
}

// fmtPercent is used/capacity in whole percent, truncated as kubectl
// top does (on millicores and bytes).
func fmtPercent(used, capacity *float64, unit float64) string {
	if used == nil || capacity == nil || math.IsNaN(*used) || math.IsNaN(*capacity) {
		return "<unknown>"
	}
	u, c := math.Round(*used*unit), math.Round(*capacity*unit)
	if c <= 0 {
		return "<unknown>"
	}
	return strconv.FormatInt(int64(u*100/c), 10) + "%"
}

// byteSize is a flag of bytes with an optional unit: 512MB, 10GiB, 1TB.
type byteSize struct{ v *int64 }

func (b byteSize) String() string {
	if b.v == nil {
		return "0"
	}
	return strconv.FormatInt(*b.v, 10)
}

func (b byteSize) Type() string { return "bytes" }

func (b byteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	num := strings.TrimRightFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToUpper(strings.TrimSpace(s[len(num):]))
	mult, ok := map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || n < 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("%q: want bytes, optionally with a unit (512MB, 10GiB, 1TB)", s)
	}
	*b.v = n * mult
	return nil
}

// describeTargets lists a cluster's scrape targets as its agent last
// reported them (describe cluster).
func describeTargets(w io.Writer, ts []telemetry.Target, now time.Time) {
	if len(ts) == 0 {
		return
	}
	fmt.Fprintln(w, "\nScrape targets:")
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "JOB\tURL\tHEALTH\tLAST SCRAPE\tDURATION\tSAMPLES\tERROR")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", t.Job, t.URL, t.Health, age(t.LastScrape, now), t.LastDuration, t.Samples, orNone(t.LastError))
	}
	tw.Flush()
}
