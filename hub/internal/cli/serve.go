package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/hub/internal/server"
)

func newServeCmd(g *globals) *cobra.Command {
	cfg := server.DefaultConfig()
	var (
		logs       logFlags
		resetAdmin bool
		rw         remoteWriteFlags
		extLabels  []string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a hub",
		Long: `Run a hub. On first start it creates its CA, its store and an admin user in
--data-dir, writes the admin console config (mode 0600) there and prints the
export line to use it. Agents connect to --agent-addr; the console API
listens on --api-addr. Stop it with Ctrl-C or SIGTERM.

Locked out (admin.yaml lost, or the last admin revoked)? Stop the hub and run
'tether serve --reset-admin --data-dir DIR': it gives the user "admin" a new
token, writes a new DIR/admin.yaml, prints the export line and exits without
serving. It refuses while a hub is running on DIR.

If DIR/pki (the CA) is missing but the store holds clusters, the hub refuses
to start: their agents trust the lost CA. Restore ca.crt and ca.key from a
backup, or pass --new-ca to create a new CA on purpose; every agent must then
be enrolled again with a new join token.`,
		Example: `  tether serve --data-dir /var/lib/tether --agent-addr 0.0.0.0:7070 --api-addr 127.0.0.1:7443

  # with the hub stopped: issue a new admin token
  tether serve --data-dir /var/lib/tether --reset-admin`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.logger(g.stderr)
			if err != nil {
				return err
			}
			if cfg.ExternalLabels, err = parseExternalLabels(extLabels); err != nil {
				return err
			}
			cfg.Logger = log
			cfg.RemoteWrite = rw.endpoints()
			cfg.Out = g.stderr
			if resetAdmin {
				if cfg.NewCA {
					return usageError{fmt.Errorf("--reset-admin and --new-ca do not go together: --reset-admin needs the existing CA")}
				}
				_, err := server.ResetAdmin(cmd.Context(), cfg)
				return err
			}
			h, err := server.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return h.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the store, CA and admin config")
	f.StringVar(&cfg.AgentAddr, "agent-addr", cfg.AgentAddr, "address agents connect to (HOST:PORT)")
	f.StringVar(&cfg.APIAddr, "api-addr", cfg.APIAddr, "console API address (HOST:PORT)")
	f.StringSliceVar(&cfg.Hosts, "host", nil, "extra DNS name or IP for the hub's serving certificate (repeatable)")
	f.DurationVar(&cfg.AgentCertTTL, "agent-cert-ttl", cfg.AgentCertTTL, "lifetime of agent certificates; agents renew at about 2/3, so an agent may stay offline for about 1/3 of it")
	f.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "agent heartbeat interval")
	f.StringSliceVar(&cfg.SystemNamespaces, "system-namespaces", cfg.SystemNamespaces, "namespaces whose ServiceTemplates every namespace may use, searched in order after the object's own")
	f.IntVar(&cfg.MaxAgentConns, "max-agent-conns", cfg.MaxAgentConns, "agent connections open at once; more are refused before TLS")
	f.IntVar(&cfg.MaxAgentConnsPerAddr, "max-agent-conns-per-addr", cfg.MaxAgentConnsPerAddr, "agent connections open at once from one source IP (agents behind one NAT share it)")
	f.Float64Var(&cfg.AgentConnRate, "agent-conn-rate", cfg.AgentConnRate, "new agent connections per second from one source IP, sustained")
	f.IntVar(&cfg.AgentConnBurst, "agent-conn-burst", cfg.AgentConnBurst, "new agent connections from one source IP allowed in a burst above --agent-conn-rate")
	f.StringVar(&cfg.ManagementKubeconfig, "management-kubeconfig", "", "kubeconfig of the Cluster API management cluster that ClusterDeployments naming a ClusterTemplate provision on (kubectl's rules: a path list, its current context)")
	f.StringSliceVar(&cfg.AdvertiseAgentAddrs, "advertise-agent-addr", nil, "agent address HOST:PORT that clusters the hub provisions dial, written into their agent chart (repeatable; default --agent-addr)")
	f.StringVar(&cfg.ClusterDeploymentRollout, "cluster-deployment-rollout", "", "YAML file with the hub-wide rollout policy ClusterDeployment service changes take (spec.rollout's fields; see tether rollout status clusterdeployments); default: they apply at once")
	rw.register(f, &cfg.RemoteWriteMaxQueueBytes)
	f.StringArrayVar(&extLabels, "external-label", nil, "NAME=VALUE label telling this hub apart downstream, as Prometheus' external_labels (repeatable): added to every series sent by remote write and to every alert notified, unless it has its own value for NAME; not stored, not seen by rules' queries. NAME may not be cluster or start with __")
	alerts := server.DefaultAlertingConfig()
	cfg.Alerting = &alerts
	alerts.Builtin.RegisterFlags(f)
	f.DurationVar(&alerts.EvalInterval, "rule-evaluation-interval", alerts.EvalInterval, "how often alert and recording rules are evaluated (a PrometheusRule group's own interval wins)")
	f.DurationVar(&alerts.CollectInterval, "fleet-metrics-interval", alerts.CollectInterval, "how often the hub writes its fleet series (tether_cluster_connected, tether_service_status, ...) into its metrics store")
	f.DurationVar(&cfg.TSDB.Retention, "tsdb-retention", cfg.TSDB.Retention, "how long the metrics store (DATA-DIR/tsdb) keeps samples")
	f.Var(byteSize{&cfg.TSDB.RetentionBytes}, "tsdb-retention-size", "bytes the metrics store's blocks may take on disk before the oldest are deleted (512MB, 10GiB; 0: no bound)")
	f.DurationVar(&cfg.TSDB.OutOfOrderWindow, "tsdb-out-of-order-window", cfg.TSDB.OutOfOrderWindow, "how far behind a series' newest sample an older one is still stored: the longest agent outage whose backlog is kept")
	f.IntVar(&cfg.TSDB.SeriesCache, "tsdb-series-cache", cfg.TSDB.SeriesCache, "series whose decoded labels and store refs the hub keeps in memory so a series an agent sent before is not decoded again (about 100 bytes each; at most 100000 of one cluster; -1 turns it off)")
	f.BoolVar(&resetAdmin, "reset-admin", false, "on a stopped hub: give the admin user a new token, write a new admin.yaml into --data-dir, and exit")
	f.BoolVar(&cfg.NewCA, "new-ca", false, "create a new CA although the pki directory is missing and clusters are enrolled; every agent must then enrol again")
	f.DurationVar(&cfg.Console.ReadHeaderTimeout, "api-read-header-timeout", cfg.Console.ReadHeaderTimeout, "console API: time allowed for the TLS handshake and request headers")
	f.DurationVar(&cfg.Console.ReadTimeout, "api-read-timeout", cfg.Console.ReadTimeout, "console API: time allowed to read a whole request, body included")
	f.DurationVar(&cfg.Console.WriteTimeout, "api-write-timeout", cfg.Console.WriteTimeout, "console API: time allowed from the end of the request headers to the end of the response")
	f.DurationVar(&cfg.Console.IdleTimeout, "api-idle-timeout", cfg.Console.IdleTimeout, "console API: an idle keep-alive connection is closed after this long")
	logs.register(cmd)
	return cmd
}

// parseExternalLabels parses the --external-label values; a bad or
// repeated one is refused before the hub opens anything.
func parseExternalLabels(vals []string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(vals))
	for _, v := range vals {
		name, value, err := server.ParseExternalLabel(v)
		if err != nil {
			return nil, usageError{fmt.Errorf("--external-label %q: %w", v, err)}
		}
		if _, dup := m[name]; dup {
			return nil, usageError{fmt.Errorf("--external-label %q: label %s given twice", v, name)}
		}
		m[name] = value
	}
	return m, nil
}

// logFlags selects the slog handler.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.level, "log-level", "info", "log level: debug|info|warn|error")
	cmd.Flags().StringVar(&l.format, "log-format", "text", "log format: text|json")
}

func (l *logFlags) logger(w interface{ Write([]byte) (int, error) }) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: %w", l.level, err)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", l.format)}
}
