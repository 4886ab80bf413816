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
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/agent/internal/apply"
	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link"
	"github.com/tetherfleet/tether/agent/internal/localapi"
	"github.com/tetherfleet/tether/agent/internal/reconcile"
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

const dbName = "agent.db"

func newRunCmd(stderr io.Writer) *cobra.Command {
	cfg := link.DefaultConfig()
	var (
		dataDir, logLevel, logFormat, kubeconfig string
		noCluster                                bool
		driftInterval, healthTimeout             time.Duration
	)
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
			if dataDir == "" {
				return usageError{errors.New("--data-dir is required")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return fmt.Errorf("create data dir: %w", err)
			}
			c, err := cache.Open(filepath.Join(dataDir, dbName), cache.Options{OutboxKinds: link.OutboxKinds()})
			if err != nil {
				return err
			}
			defer func() {
				if err := c.Close(); err != nil {
					log.Warn("close cache", "err", err)
				}
			}()
			cfg.Cache = c
			cfg.Outbox = c
			cfg.Logger = log
			cfg.Hubs = splitHubs(cfg.Hubs)
			var rec *reconcile.Reconciler
			var l *link.Link
			if !noCluster {
				rc, err := apply.LoadRESTConfig(kubeconfig)
				if err != nil {
					return fmt.Errorf("find the cluster to manage (--kubeconfig, $KUBECONFIG, in-cluster or ~/.kube/config; --no-cluster to run without one): %w", err)
				}
				cfg.APIServer = rc.Host
				ecfg := apply.DefaultConfig()
				ecfg.RESTConfig = rc
				ecfg.Records = c
				ecfg.Logger = log
				engine, err := apply.New(ecfg)
				if err != nil {
					return err
				}
				defer engine.Close()
				rcfg := reconcile.DefaultConfig()
				rcfg.Cache, rcfg.Engine, rcfg.Logger = c, engine, log
				rcfg.Charts = chartsVia(func() *link.Link { return l })
				rcfg.Notify = func() { l.KickOutbox() }
				if driftInterval > 0 {
					rcfg.Interval = driftInterval
				}
				if healthTimeout > 0 {
					rcfg.HealthTimeout = healthTimeout
				}
				if rec, err = reconcile.New(rcfg); err != nil {
					return err
				}
				cfg.Handler = rec
			}
			l, err = link.New(cfg)
			if err != nil {
				return err
			}
			defer l.Close()
			local, err := localapi.Listen(dataDir, func() any {
				st := statusOf(l.Status(), c, true)
				if rec != nil {
					for _, s := range rec.Statuses() {
						st.Services = append(st.Services, serviceView{Name: s.GetName(), Namespace: s.GetNamespace(), State: s.GetState(), Message: s.GetMessage()})
					}
				}
				return st
			}, log)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			var wg sync.WaitGroup
			defer wg.Wait()
			wg.Go(func() {
				if err := local.Run(ctx); err != nil {
					log.Warn("local status socket", "err", err)
				}
			})
			if rec != nil {
				wg.Go(func() {
					if err := rec.Run(ctx); err != nil {
						log.Error("reconcile loop", "err", err)
					}
				})
			}
			log.Info("agent starting", "version", version.Get(), "data_dir", dataDir, "manages_cluster", rec != nil)
			err = l.Run(ctx)
			cancel()
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "directory for the agent's bbolt file and status socket (required)")
	f.StringSliceVar(&cfg.Hubs, "hub", nil, "hub agent address HOST:PORT (repeatable; tried in turn)")
	f.StringVar(&cfg.Token, "token", os.Getenv("TETHER_TOKEN"), "join token for the first start (default $TETHER_TOKEN)")
	f.DurationVar(&cfg.MaxBackoff, "max-backoff", cfg.MaxBackoff, "longest wait between reconnect attempts")
	f.BoolVar(&cfg.PostQuantum, "post-quantum-tls", false, "offer the hybrid post-quantum key exchange (X25519MLKEM768); adds ~2.3 KB to every connect")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to manage (default $KUBECONFIG, in-cluster, else ~/.kube/config)")
	f.BoolVar(&noCluster, "no-cluster", false, "run the link only: enrol, connect and report, without managing a cluster")
	f.DurationVar(&driftInterval, "drift-interval", 0, "how often releases are checked for drift (default 30s)")
	f.DurationVar(&healthTimeout, "health-timeout", 0, "how long a release may take to become healthy before it is Failed (default 5m)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug|info|warn|error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text|json")
	return cmd
}

// chartsVia fetches charts through the link, which is created after the
// reconciler that needs it.
type chartsVia func() *link.Link

func (f chartsVia) FetchChart(ctx context.Context, digest string) ([]byte, error) {
	return f().FetchChart(ctx, digest)
}

func splitHubs(in []string) []string {
	var out []string
	for _, h := range in {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
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

// agentStatus is what `tether-agent status` prints.
type agentStatus struct {
	Running bool        `json:"running"`
	Link    link.Status `json:"link"`
	Outbox  outboxStats `json:"outbox"`
	// Services is what the reconciler last saw, when the agent runs.
	Services []serviceView `json:"services,omitempty"`
}

type serviceView struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	State     string `json:"state"`
	Message   string `json:"message,omitempty"`
}

type outboxStats struct {
	Pending      uint64 `json:"pending"`
	Bytes        uint64 `json:"bytes"`
	Dropped      uint64 `json:"dropped"`
	DeadLettered uint64 `json:"deadLettered"`
	// Kinds are the same counters per payload kind.
	Kinds map[string]cache.OutboxKindStats `json:"kinds,omitempty"`
}

// statsSource is what statusOf reads from the cache.
type statsSource interface {
	OutboxStats() (cache.OutboxStats, error)
}

func statusOf(ls link.Status, c statsSource, running bool) agentStatus {
	st := agentStatus{Running: running, Link: ls}
	if o, err := c.OutboxStats(); err == nil {
		st.Outbox = outboxStats{Pending: o.Pending, Bytes: o.Bytes, Dropped: o.Dropped, DeadLettered: o.DeadLettered, Kinds: o.Kinds}
	}
	return st
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
			var st agentStatus
			err := localapi.Get(ctx, dataDir, &st)
			if errors.Is(err, localapi.ErrNotRunning) {
				st, err = offlineStatus(dataDir)
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

// offlineStatus reads the bbolt file of an agent that is not running.
func offlineStatus(dataDir string) (agentStatus, error) {
	c, err := cache.OpenReadOnly(filepath.Join(dataDir, dbName))
	if err != nil {
		return agentStatus{}, err
	}
	defer c.Close()
	ls := link.Status{State: link.StateOffline}
	if id, err := c.Identity(); err == nil {
		ls.Cluster = id.Cluster
		ls.CertExpires = id.NotAfter
		if len(id.HubAddrs) > 0 {
			ls.Hub = id.HubAddrs[0]
		}
	} else if !errors.Is(err, cache.ErrNoIdentity) {
		return agentStatus{}, err
	}
	if s, err := c.LinkState(); err == nil {
		ls.Since, ls.LastContact, ls.LastError, ls.Connects = s.Since, s.LastContact, s.LastError, s.ConnectedCount
		if s.Hub != "" {
			ls.Hub = s.Hub
		}
		if s.State == link.StateRefused {
			ls.State = s.State
		}
	}
	if ls.LastError == "" {
		ls.LastError = "agent is not running"
	}
	if rev, _, err := c.LatestDesired(); err == nil {
		ls.Revision = rev
	}
	return statusOf(ls, c, false), nil
}

func printStatus(w io.Writer, st agentStatus, format string) error {
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
	if err := tw.Flush(); err != nil {
		return err
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
