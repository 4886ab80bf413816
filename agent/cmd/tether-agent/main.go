// Command tether-agent runs on each cluster of a Tether fleet. It dials out
// to the hub, so edge sites behind NAT need no inbound port, and keeps its
// identity, desired state and outbox in a bbolt file in --data-dir.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/agent/internal/assemble"
	"github.com/tetherfleet/tether/agent/internal/link"
	"github.com/tetherfleet/tether/agent/internal/localapi"
	"github.com/tetherfleet/tether/protocol/version"
)

type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:   "tether-agent",
		Short: "The Tether agent: keeps one cluster in line with its hub",
		Long: `tether-agent runs on each cluster of a Tether fleet. It dials out to the hub
(TLS 1.3, one connection, yamux + gRPC both ways), so edge sites behind NAT
need no inbound port. Its identity, desired state and outbox live in a bbolt
file in --data-dir, so it keeps working while the link is down.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(stderr), newStatusCmd(stdout), newVersionCmd(stdout))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func newRunCmd(stderr io.Writer) *cobra.Command {
	cfg := assemble.DefaultConfig()
	var logLevel, logFormat string
	cmd := &cobra.Command{
		Use:   "run --data-dir DIR [--hub HOST:PORT --token TOKEN]",
		Short: "Enrol (first start) and keep the agent connected to its hub",
		Long: `Run the agent. On first start pass --hub and a join token from
'tether token create --cluster NAME': the agent pins the hub CA named in the
token, makes its own key, and gets a certificate for that cluster. After
that only --data-dir is needed; --hub (repeatable or comma-separated)
replaces the stored hub addresses. SIGTERM stops the agent and leaves
whatever it installed running.`,
		Example: `  tether-agent run --hub hub.example.com:7070 --token tether1.... --data-dir /var/lib/tether-agent
  tether-agent run --data-dir /var/lib/tether-agent`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("%s takes no arguments", cmd.CommandPath())}
			}
			if cfg.DataDir == "" {
				return usageError{errors.New("--data-dir is required")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			cfg.Logger = log
			cfg.WorkerArgs = []string{"--log-level", logLevel, "--log-format", logFormat}
			agent, err := assemble.New(cfg)
			if err != nil {
				return err
			}
			err = agent.Run(cmd.Context())
			if cerr := agent.Close(); cerr != nil {
				log.Warn("close agent", "err", cerr)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the agent's bbolt file and status socket (required)")
	f.StringSliceVar(&cfg.Link.Hubs, "hub", nil, "hub agent address HOST:PORT (repeatable; tried in turn)")
	f.StringVar(&cfg.Link.Token, "token", os.Getenv("TETHER_TOKEN"), "join token for the first start (default $TETHER_TOKEN)")
	f.DurationVar(&cfg.Link.MaxBackoff, "max-backoff", cfg.Link.MaxBackoff, "longest wait between reconnect attempts")
	f.BoolVar(&cfg.Link.PostQuantum, "post-quantum-tls", false, "offer the hybrid post-quantum key exchange (X25519MLKEM768); adds ~2.3 KB to every connect")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to manage (default $KUBECONFIG, in-cluster, else ~/.kube/config)")
	f.BoolVar(&cfg.NoCluster, "no-cluster", false, "run the link only: enrol, connect and report, without managing a cluster")
	f.DurationVar(&cfg.DriftInterval, "drift-interval", 0, "how often releases are checked for drift (default 30s)")
	f.IntVar(&cfg.ApplyConcurrency, "apply-concurrency", 0, "how many services are installed, upgraded, repaired or uninstalled at once (default 4)")
	f.DurationVar(&cfg.HealthTimeout, "health-timeout", 0, "how long a release may take to become healthy before it is Failed (default 5m)")
	f.StringVar(&cfg.HelmWorker, "helm-worker", "", "the Helm worker binary, started when there is Helm work (default: tether-agent-helm next to this binary, else in $PATH)")
	f.DurationVar(&cfg.WorkerIdle, "helm-worker-idle", 0, "stop the Helm worker after this long without work (default 20s; negative: keep it running)")
	f.DurationVar(&cfg.Telemetry.Interval, "telemetry-interval", cfg.Telemetry.Interval, "how often inventory and usage metrics are collected for the hub (0: off, and metrics are not offered to the hub)")
	f.Int64Var(&cfg.Telemetry.OutboxBytes, "telemetry-outbox-bytes", cfg.Telemetry.OutboxBytes, "on-disk quota of metric batches waiting for the hub; the oldest are dropped (and counted) beyond it (default: over 3 days of 2,000 series at 15s)")
	f.Int64Var(&cfg.Telemetry.DrainRate, "telemetry-drain-rate", cfg.Telemetry.DrainRate, "bytes per second at most of queued metric batches sent to the hub after an outage (0: unbounded); status always goes first")
	f.BoolVar(&cfg.Telemetry.Usage, "telemetry-usage", cfg.Telemetry.Usage, "also collect CPU and memory usage (metrics.k8s.io, else the kubelets' resource metrics)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug|info|warn|error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text|json")
	return cmd
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: %w", level, err)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", format)}
}

func newStatusCmd(stdout io.Writer) *cobra.Command {
	var dataDir, output string
	cmd := &cobra.Command{
		Use:   "status --data-dir DIR [-o json|yaml]",
		Short: "Show the agent's link state; works while the hub or the agent is down",
		Long: `Show the agent's identity and link state. It asks the running agent over
its local socket; if no agent runs, it reads the bbolt file read-only. It
needs no hub.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("%s takes no arguments", cmd.CommandPath())}
			}
			if dataDir == "" {
				return usageError{errors.New("--data-dir is required")}
			}
			switch output {
			case "", "json", "yaml":
				return nil
			}
			return usageError{fmt.Errorf("--output %q: want json or yaml", output)}
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			var st assemble.Status
			err := localapi.Get(ctx, dataDir, &st)
			if errors.Is(err, localapi.ErrNotRunning) {
				st, err = assemble.OfflineStatus(dataDir)
			}
			if err != nil {
				return err
			}
			return printStatus(stdout, st, output)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the agent's data directory (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json|yaml")
	return cmd
}

func printStatus(w io.Writer, st assemble.Status, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	case "yaml":
		b, err := yaml.Marshal(st)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "<never>"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), time.Since(t).Round(time.Second))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	l := st.Link
	cluster := l.Cluster
	if cluster == "" {
		cluster = "<not enrolled>"
	}
	fmt.Fprintf(tw, "Cluster:\t%s\n", cluster)
	state := l.State
	if !st.Running {
		state += " (agent not running)"
	}
	fmt.Fprintf(tw, "State:\t%s\n", state)
	fmt.Fprintf(tw, "Hub:\t%s\n", l.Hub)
	fmt.Fprintf(tw, "Since:\t%s\n", ts(l.Since))
	fmt.Fprintf(tw, "Last contact:\t%s\n", ts(l.LastContact))
	if l.LastError != "" {
		fmt.Fprintf(tw, "Last error:\t%s\n", l.LastError)
	}
	if !l.NextAttempt.IsZero() && l.State != link.StateConnected {
		fmt.Fprintf(tw, "Next attempt:\t%s\n", l.NextAttempt.Local().Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "Connects:\t%d\n", l.Connects)
	fmt.Fprintf(tw, "Desired revision:\t%d\n", l.Revision)
	if !l.CertExpires.IsZero() {
		fmt.Fprintf(tw, "Certificate expires:\t%s\n", l.CertExpires.Local().Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "Outbox:\t%d pending (%d bytes), %d dropped\n", st.Outbox.Pending, st.Outbox.Bytes, st.Outbox.Dropped)
	if hw := st.HelmWorker; hw != nil {
		line := hw.State
		if hw.PID != 0 {
			line += fmt.Sprintf(" (pid %d)", hw.PID)
		}
		line += fmt.Sprintf(", %d starts, %d crashes", hw.Starts, hw.Crashes)
		fmt.Fprintf(tw, "Helm worker:\t%s\n", line)
		if hw.LastCrash != "" {
			fmt.Fprintf(tw, "Last worker crash:\t%s: %s\n", hw.LastCrashAt.Local().Format(time.RFC3339), hw.LastCrash)
		}
		if hw.StartError != "" {
			fmt.Fprintf(tw, "Worker start error:\t%s\n", hw.StartError)
		}
	}
	if m, ok := st.Outbox.Kinds[link.KindMetrics]; ok {
		fmt.Fprintf(tw, "Metrics outbox:\t%d batches (%d bytes), %d dropped\n", m.Pending, m.Bytes, m.Dropped)
	}
	if tel := st.Telemetry; tel != nil {
		line := fmt.Sprintf("%d collections, %d failed, %d series last (%s)", tel.Collections, tel.Failures, tel.LastSeries, ts(tel.LastAt))
		if tel.UsageSource != "" {
			line += ", usage from " + tel.UsageSource
		}
		fmt.Fprintf(tw, "Telemetry:\t%s\n", line)
		if tel.LastError != "" {
			fmt.Fprintf(tw, "Telemetry error:\t%s\n", tel.LastError)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Targets) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		fmt.Fprintln(tw, "SCRAPE JOB\tTARGET\tHEALTH\tLAST SCRAPE\tSAMPLES\tERROR")
		for _, t := range st.Targets {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", t.Job, t.URL, t.Health, ts(t.LastScrape), t.Samples, t.LastError)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(st.Services) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tNAMESPACE\tSTATE\tMESSAGE")
		for _, s := range st.Services {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.Namespace, s.State, s.Message)
		}
		return tw.Flush()
	}
	return nil
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the agent version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintln(stdout, version.Read().String())
		},
	}
}
