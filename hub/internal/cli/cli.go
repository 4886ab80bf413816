// Package cli implements the `tether` command: the hub server (`serve`) and
// the console commands that talk to a hub's API.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/objects"
)

// Exit codes.
const (
	exitOK = 0
	// exitError: the command ran and failed.
	exitError = 1
	// exitUsage: bad flags or arguments.
	exitUsage = 2
	// exitNotFound: the named object does not exist.
	exitNotFound = 3
)

type usageError struct{ error }

// Main runs the CLI with args and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return mainKinds(objects.DefaultKinds(), args, stdin, stdout, stderr)
}

// mainKinds is Main for the object kinds of kinds.
func mainKinds(kinds *objects.Registry, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(kinds, stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ec exitCodeError
	if errors.As(err, &ec) && ec.err == nil {
		return ec.code
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var ue usageError
	switch {
	case errors.As(err, &ec):
		return ec.code
	case errors.As(err, &ue):
		return exitUsage
	case api.IsNotFound(err):
		return exitNotFound
	}
	return exitError
}

type globals struct {
	// kinds are the object kinds get, describe and delete know.
	kinds   *objects.Registry
	config  string
	timeout time.Duration
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
}

func (g *globals) client() (*api.Client, error) {
	path := api.ResolveConfigPath(g.config)
	cfg, err := api.LoadClientConfig(path)
	if err != nil {
		return nil, err
	}
	return api.NewClient(cfg)
}

func (g *globals) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), g.timeout)
}

func newRoot(kinds *objects.Registry, stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{kinds: kinds, stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "tether",
		Short: "Tether: an edge-first fleet manager for Kubernetes",
		Long: `Tether manages a fleet of Kubernetes clusters from one hub. Agents on each
cluster dial out to the hub, so edge sites behind NAT need no inbound port.

Run a hub with 'tether serve'. Every other command talks to a hub using the
console config from --config, else $TETHER_CONFIG, else
~/.config/tether/config.yaml.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.config, "config", "", "console config file (default $TETHER_CONFIG, else ~/.config/tether/config.yaml)")
	root.PersistentFlags().DurationVar(&g.timeout, "request-timeout", 30*time.Second, "timeout of each call to the hub")
	root.AddCommand(
		newServeCmd(g),
		newVersionCmd(g),
		newTokenCmd(g),
		newGetCmd(g),
		newDescribeCmd(g),
		newDeleteCmd(g),
		newLabelCmd(g),
		newApplyCmd(g),
		newDiffCmd(g),
		newChartCmd(g),
		newUserCmd(g),
		newRolloutCmd(g),
		newQueryCmd(g), newQueryRangeCmd(g), newTopCmd(g),
		newSilenceCmd(g),
		newWaitCmd(g),
	)
	return root
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s: want %s, got %d arguments (see --help)", cmd.CommandPath(), what, len(args))}
		}
		return nil
	}
}
