package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/hub/internal/server"
)

func newServeCmd(g *globals) *cobra.Command {
	cfg := server.DefaultConfig()
	var logs logFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a hub",
		Long: `Run a hub. On first start it creates its CA, its store and an admin user in
--data-dir, writes the admin console config (mode 0600) there and prints the
export line to use it. Agents connect to --agent-addr; the console API
listens on --api-addr. Stop it with Ctrl-C or SIGTERM.`,
		Example: `  tether serve --data-dir /var/lib/tether --agent-addr 0.0.0.0:7070 --api-addr 127.0.0.1:7443`,
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.logger(g.stderr)
			if err != nil {
				return err
			}
			cfg.Logger = log
			cfg.Out = g.stderr
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
	logs.register(cmd)
	return cmd
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
