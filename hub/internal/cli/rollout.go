package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/rollout"
)

// clusterStates is the order states are shown in.
var clusterStates = []string{rollout.Pending, rollout.Progressing, rollout.Succeeded, rollout.Failed, rollout.TimedOut, rollout.Skipped, rollout.Deferred, rollout.Staged}

func newRolloutCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Follow and steer the rollout of a MultiClusterService or of ClusterDeployment changes",
		Long: `A MultiClusterService with spec.rollout takes a change cluster by cluster:
strategy, maxConcurrency, stages with promotion, maintenance windows and the
offlineClusters policy decide when each cluster may take the new revision
(docs/design/rollouts.md).

NAME clusterdeployments (without -n) is the hub-wide rollout of
ClusterDeployment changes, on a hub started with
'tether serve --cluster-deployment-rollout FILE': every ClusterDeployment's
spec.serviceSpec changes roll out under that one policy, in waves
(maxConcurrency counts every cluster with a pending change). status, pause,
resume, approve and history take it like an MCS rollout; undo takes
--cluster-deployment NAMESPACE/NAME. To name an MCS called clusterdeployments,
give -n.

Cluster states: Pending (waiting for its turn, a window or an approval),
Progressing, Succeeded, Failed, TimedOut, Skipped (rolled back while in
flight), Deferred (offline at its turn; it takes the revision when it
returns, without holding the rollout).`,
	}
	cmd.AddCommand(newRolloutStatusCmd(g), newRolloutHistoryCmd(g),
		newRolloutOpCmd(g, "pause", "Stop admitting clusters (those in progress go on)"),
		newRolloutOpCmd(g, "resume", "Resume a paused rollout, or go on with a halted one with a fresh failure budget"),
		newRolloutApproveCmd(g), newRolloutUndoCmd(g))
	return cmd
}

func newRolloutStatusCmd(g *globals) *cobra.Command {
	var (
		out      outputFlag
		ns       nsFlags
		watch    bool
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a rollout per stage and per cluster",
		Example: `  tether rollout status web -n acme
  tether rollout status web -w        # follow until it completes, halts or rolls back
  tether rollout status web -o yaml
  tether rollout status clusterdeployments   # the hub-wide rollout of ClusterDeployment changes`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(1, "NAME")(cmd, args); err != nil {
				return err
			}
			if watch && out.format != "" {
				return usageError{fmt.Errorf("%s: -w prints the live view; it does not take -o", cmd.CommandPath())}
			}
			return out.validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			namespace, name := rolloutTarget(cmd, ns.namespace, args[0])
			if !watch {
				ctx, cancel := g.ctx(cmd)
				defer cancel()
				rec, err := c.RolloutStatus(ctx, namespace, name)
				if err != nil {
					return fmt.Errorf("rollout status %s: %w", rolloutName(namespace, name), err)
				}
				if out.format != "" {
					return out.print(g.stdout, rec, nil)
				}
				printRollout(g.stdout, rec, time.Now())
				return nil
			}
			return watchRollout(cmd.Context(), g, c, namespace, name, interval)
		},
	}
	ns.register(cmd, false)
	addOutputFlag(cmd, &out, "json", "yaml")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the rollout live until it completes, halts or rolls back (exit 1 unless it completes)")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often -w asks the hub")
	return cmd
}

// watchRollout prints the rollout each time it changes, until it ends.
func watchRollout(ctx context.Context, g *globals, c *api.Client, ns, name string, interval time.Duration) error {
	var last []byte
	for {
		rctx, cancel := context.WithTimeout(ctx, g.timeout)
		rec, err := c.RolloutStatus(rctx, ns, name)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("rollout status %s: %w", rolloutName(ns, name), err)
		}
		var b bytes.Buffer
		printRollout(&b, rec, time.Now())
		view := b.Bytes()
		// Times move on their own; redraw when something else changed.
		if key := rolloutKey(rec); !bytes.Equal(key, last) {
			last = key
			fmt.Fprintf(g.stdout, "--- %s\n", time.Now().Format(time.TimeOnly))
			_, _ = g.stdout.Write(view)
		}
		switch rec.Phase {
		case rollout.PhaseComplete:
			return nil
		case rollout.PhaseHalted, rollout.PhaseRolledBack:
			return exitCodeError{code: exitError, err: fmt.Errorf("rollout %s %s: %s", rolloutName(ns, name), rec.Phase, rec.Reason)}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

func rolloutKey(rec *rollout.Record) []byte {
	var b strings.Builder
	fmt.Fprintln(&b, rec.Revision, rec.Phase, rec.Reason)
	for _, s := range rec.Stages {
		fmt.Fprintln(&b, s.Name, s.Phase, s.Reason)
	}
	for _, n := range sortedClusterNames(rec) {
		c := rec.Clusters[n]
		fmt.Fprintln(&b, n, c.State, c.Reason, c.Admitted, c.Target)
	}
	return []byte(b.String())
}

// rolloutTarget is the rollout NAME names: the hub-wide rollout of
// ClusterDeployment changes for "clusterdeployments" without -n, else
// the MultiClusterService's.
func rolloutTarget(cmd *cobra.Command, namespace, name string) (string, string) {
	if name == rollout.ClusterDeploymentsName && !cmd.Flags().Changed("namespace") {
		return rollout.ClusterDeploymentsNamespace, rollout.ClusterDeploymentsName
	}
	return namespace, name
}

func isCDRollout(namespace, name string) bool {
	return namespace == rollout.ClusterDeploymentsNamespace && name == rollout.ClusterDeploymentsName
}

// rolloutName is how messages name a rollout.
func rolloutName(namespace, name string) string {
	if isCDRollout(namespace, name) {
		return name
	}
	return namespace + "/" + name
}

func sortedClusterNames(rec *rollout.Record) []string {
	names := make([]string, 0, len(rec.Clusters))
	for n := range rec.Clusters {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// progressBar draws done of total as [#####-----] in width cells.
func progressBar(done, total, width int) string {
	if total == 0 {
		return "[" + strings.Repeat("#", width) + "]"
	}
	n := done * width / total
	return "[" + strings.Repeat("#", n) + strings.Repeat("-", width-n) + "]"
}

func printRollout(w io.Writer, rec *rollout.Record, now time.Time) {
	counts := rec.Counts()
	total := len(rec.Clusters)
	done := counts[rollout.Succeeded] + counts[rollout.Failed] + counts[rollout.TimedOut] + counts[rollout.Skipped]
	cds := rec.Scope == rollout.ScopeClusterDeployments
	if cds {
		fmt.Fprintf(w, "Rollout of ClusterDeployment changes (hub-wide): wave %d, %s %s %d/%d clusters done (%d succeeded)\n",
			rec.Revision, rec.Phase, progressBar(done, total, 30), done, total, counts[rollout.Succeeded])
	} else {
		fmt.Fprintf(w, "Rollout %s/%s: revision %d, %s %s %d/%d clusters done (%d succeeded)\n",
			rec.Namespace, rec.Name, rec.Revision, rec.Phase, progressBar(done, total, 30), done, total, counts[rollout.Succeeded])
	}
	if rec.Reason != "" {
		fmt.Fprintf(w, "  %s\n", rec.Reason)
	}
	var parts []string
	for _, s := range clusterStates {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, counts[s]))
		}
	}
	fmt.Fprintf(w, "  %s\n\n", orNone(strings.Join(parts, ", ")))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tPHASE\t"+strings.ToUpper(strings.Join(clusterStates, "\t"))+"\tREASON")
	for _, s := range rec.Stages {
		row := []string{s.Name, s.Phase}
		for _, st := range clusterStates {
			row = append(row, strconv.Itoa(s.Counts[st]))
		}
		fmt.Fprintln(tw, strings.Join(append(row, s.Reason), "\t"))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if cds {
		// REVISION is what the cluster is admitted to, TARGET what its
		// ClusterDeployment asks for.
		fmt.Fprintln(tw, "CLUSTERDEPLOYMENT\tCLUSTER\tSTAGE\tSTATE\tREVISION\tTARGET\tSINCE\tREASON")
	} else {
		fmt.Fprintln(tw, "CLUSTER\tSTAGE\tSTATE\tREVISION\tSINCE\tREASON")
	}
	for _, n := range sortedClusterNames(rec) {
		c := rec.Clusters[n]
		rev := "<none>"
		if c.Listed {
			rev = strconv.FormatUint(c.Admitted, 10)
		}
		if cds {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n, c.Cluster, c.Stage, c.State, rev, c.Target, age(c.Since, now), c.Reason)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n, c.Stage, c.State, rev, age(c.Since, now), c.Reason)
	}
	_ = tw.Flush()
}

func newRolloutHistoryCmd(g *globals) *cobra.Command {
	var (
		out outputFlag
		ns  nsFlags
	)
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "List a MultiClusterService's revisions (or every ClusterDeployment's, for clusterdeployments) and what became of each",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(1, "NAME")(cmd, args); err != nil {
				return err
			}
			return out.validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			namespace, name := rolloutTarget(cmd, ns.namespace, args[0])
			h, err := c.RolloutHistory(ctx, namespace, name)
			if err != nil {
				return fmt.Errorf("rollout history %s: %w", rolloutName(namespace, name), err)
			}
			now := time.Now()
			cds := isCDRollout(namespace, name)
			return out.print(g.stdout, h, func() table {
				t := table{headers: []string{"REVISION", "CREATED", "SERVICES", "OUTCOME"}}
				if cds {
					t.headers = append([]string{"CLUSTERDEPLOYMENT"}, t.headers...)
				}
				for _, r := range h {
					var svcs []string
					for _, s := range r.Spec.ServiceSpec.Services {
						svcs = append(svcs, s.Name+"="+s.Template)
					}
					row := []string{strconv.FormatUint(r.Revision, 10), age(r.Created, now), orNone(strings.Join(svcs, ",")), orNone(r.Outcome)}
					if cds {
						row = append([]string{r.ClusterDeployment}, row...)
					}
					t.rows = append(t.rows, row)
				}
				t.wide = len(t.headers)
				return t
			})
		},
	}
	ns.register(cmd, false)
	addOutputFlag(cmd, &out, "json", "yaml")
	return cmd
}

func newRolloutOpCmd(g *globals, op, short string) *cobra.Command {
	var ns nsFlags
	cmd := &cobra.Command{
		Use:   op + " NAME",
		Short: short,
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			namespace, name := rolloutTarget(cmd, ns.namespace, args[0])
			rec, err := c.RolloutOp(ctx, namespace, name, op)
			if err != nil {
				return fmt.Errorf("rollout %s %s: %w", op, rolloutName(namespace, name), err)
			}
			what := "revision"
			if isCDRollout(namespace, name) {
				what = "wave"
			}
			fmt.Fprintf(g.stdout, "rollout %s %sd: phase %s, %s %d\n", rolloutName(namespace, name), op, rec.Phase, what, rec.Revision)
			return nil
		},
	}
	ns.register(cmd, false)
	return cmd
}

func newRolloutApproveCmd(g *globals) *cobra.Command {
	var ns nsFlags
	cmd := &cobra.Command{
		Use:   "approve NAME STAGE",
		Short: "Let a stage with promotion Manual start",
		Example: `  tether rollout approve web main -n acme
  tether rollout approve clusterdeployments main   # the hub-wide ClusterDeployment rollout's current wave`,
		Args: exactArgs(2, "NAME and STAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			namespace, name := rolloutTarget(cmd, ns.namespace, args[0])
			if _, err := c.RolloutApprove(ctx, namespace, name, args[1]); err != nil {
				return fmt.Errorf("rollout approve %s %s: %w", rolloutName(namespace, name), args[1], err)
			}
			fmt.Fprintf(g.stdout, "rollout %s: stage %s approved\n", rolloutName(namespace, name), args[1])
			return nil
		},
	}
	ns.register(cmd, false)
	return cmd
}

func newRolloutUndoCmd(g *globals) *cobra.Command {
	var (
		ns nsFlags
		to uint64
		cd string
	)
	cmd := &cobra.Command{
		Use:   "undo NAME [--to-revision N] [--cluster-deployment NAMESPACE/NAME]",
		Short: "Re-apply an earlier revision's selector and services",
		Long: `Undo re-applies the cluster selector and services of an earlier revision
(default: the one before the current) to the MultiClusterService. That is a
new revision, rolled out under the object's rollout policy like any change.
An immediate return of failed clusters is onFailure: Rollback's job.

For the hub-wide rollout (NAME clusterdeployments), --cluster-deployment
names the ClusterDeployment whose earlier spec.serviceSpec is re-applied;
revisions are that ClusterDeployment's (tether rollout history
clusterdeployments).`,
		Example: `  tether rollout undo web -n acme --to-revision 3
  tether rollout undo clusterdeployments --cluster-deployment acme/edge-paris-1`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			namespace, name := rolloutTarget(cmd, ns.namespace, args[0])
			if isCDRollout(namespace, name) {
				if cd == "" {
					return usageError{fmt.Errorf("%s clusterdeployments: --cluster-deployment NAMESPACE/NAME is required", cmd.CommandPath())}
				}
				res, err := c.RolloutUndo(ctx, namespace, name, to, cd)
				if err != nil {
					return fmt.Errorf("rollout undo clusterdeployments %s: %w", cd, err)
				}
				fmt.Fprintf(g.stdout, "rollout clusterdeployments: revision %d of %s re-applied: clusterdeployment %s, generation %d\n", res.Restored, cd, res.Action, res.Generation)
				return nil
			}
			if cd != "" {
				return usageError{fmt.Errorf("%s: --cluster-deployment is only for NAME clusterdeployments", cmd.CommandPath())}
			}
			res, err := c.RolloutUndo(ctx, namespace, name, to, "")
			if err != nil {
				return fmt.Errorf("rollout undo %s/%s: %w", namespace, name, err)
			}
			fmt.Fprintf(g.stdout, "rollout %s/%s: revision %d re-applied: multiclusterservice/%s %s, generation %d\n", namespace, name, res.Restored, name, res.Action, res.Generation)
			return nil
		},
	}
	ns.register(cmd, false)
	cmd.Flags().Uint64Var(&to, "to-revision", 0, "revision to go back to (see tether rollout history); default the one before the current")
	cmd.Flags().StringVar(&cd, "cluster-deployment", "", "NAME clusterdeployments: the ClusterDeployment (NAMESPACE/NAME) to undo")
	return cmd
}
