// Command tether-agent-helm is the agent's Helm worker. tether-agent
// starts it when a release must be installed, upgraded, repaired, planned
// or uninstalled, talks to it over a socketpair it inherits as file
// descriptor 3 (protocol/worker/v1), and stops it when it has been idle a
// while: Helm's SDK (with kubectl, kustomize and oras under it) is most of
// an agent's memory, and it is needed only while there is work. Install it
// next to tether-agent; it is not meant to be run by hand.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/agent/internal/apply"
	"github.com/tetherfleet/tether/agent/internal/helmworker"
	"github.com/tetherfleet/tether/agent/internal/worker"
	"github.com/tetherfleet/tether/protocol/version"
	workerv1 "github.com/tetherfleet/tether/protocol/worker/v1"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type usageError struct{ error }

func run(args []string, stdout, stderr io.Writer) int {
	var kubeconfig, logLevel, logFormat string
	root := &cobra.Command{
		Use:   "tether-agent-helm [--kubeconfig PATH]",
		Short: "The Tether agent's Helm worker (started by tether-agent, not by hand)",
		Long: `tether-agent-helm runs Helm operations for tether-agent. The agent starts it
when there is work, over a socket it inherits as file descriptor 3, and
stops it when it is idle; it exits when the agent's end of the socket
closes. It reads and writes no files of its own: the release records it
must keep go to the agent, which holds the bbolt file. Install it next to
tether-agent (or pass the agent --helm-worker PATH).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("%s takes no arguments", cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error {
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError{fmt.Errorf("--log-level %q: %w", logLevel, err)}
			}
			opts := &slog.HandlerOptions{Level: lv}
			var h slog.Handler = slog.NewTextHandler(stderr, opts)
			switch logFormat {
			case "text":
			case "json":
				h = slog.NewJSONHandler(stderr, opts)
			default:
				return usageError{fmt.Errorf("--log-format %q: want text or json", logFormat)}
			}
			log := slog.New(h).With("component", "helm-worker", "pid", os.Getpid())
			return worker.ServeChild(log, func(records worker.RemoteRecords) (workerv1.EngineServer, error) {
				rc, err := apply.LoadRESTConfig(kubeconfig)
				if err != nil {
					return nil, fmt.Errorf("find the cluster (--kubeconfig %q): %w", kubeconfig, err)
				}
				cfg := apply.DefaultConfig()
				cfg.RESTConfig, cfg.Records, cfg.Logger = rc, records, log
				e, err := apply.New(cfg)
				if err != nil {
					return nil, err
				}
				return helmworker.NewServer(e), nil
			})
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := root.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default $KUBECONFIG, in-cluster, else ~/.kube/config)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug|info|warn|error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text|json")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(stdout, version.Get()) },
	})
	err := root.Execute()
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
