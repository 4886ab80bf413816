package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/objects"
)

// Wait targets of `tether wait clusterdeployment --for`.
const (
	waitReady    = "Ready"
	waitEnrolled = "Enrolled"
)

func newWaitCmd(g *globals) *cobra.Command {
	var (
		ns       nsFlags
		forWhat  string
		timeout  time.Duration
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "wait clusterdeployment NAME --for Ready|Enrolled",
		Short: "Wait until a provisioned cluster is Ready or its agent Enrolled, printing its progress",
		Long: wrap("Wait until a ClusterDeployment that names a ClusterTemplate reaches phase Ready "+
			"(its Cluster API Cluster is Available) or, with --for Enrolled, until the agent the hub "+
			"installed in it has connected. Prints a line whenever the phase, a condition, the machines "+
			"or the agent change. Exit code 0 when reached, 1 when the phase turns Failed or --timeout "+
			"passes, 2 on bad arguments, 3 when the deployment does not exist.", 76),
		Example: `  tether wait clusterdeployment edge-paris-1 --for Ready --timeout 20m
  tether wait cd edge-paris-1 -n acme --for Enrolled`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(2, "KIND NAME")(cmd, args); err != nil {
				return err
			}
			k, err := g.lookupKind(args[0])
			if err != nil {
				return err
			}
			if k.obj == nil || k.obj.Name() != objects.KindClusterDeployment {
				return usageError{fmt.Errorf("%s: only clusterdeployment can be waited for, not %q", cmd.CommandPath(), args[0])}
			}
			if forWhat != waitReady && forWhat != waitEnrolled {
				return usageError{fmt.Errorf("%s: --for %q: want %s or %s", cmd.CommandPath(), forWhat, waitReady, waitEnrolled)}
			}
			if timeout <= 0 {
				return usageError{fmt.Errorf("%s: --timeout %s: want a positive duration", cmd.CommandPath(), timeout)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return waitDeployment(ctx, g, c, ns.namespace, args[1], forWhat, timeout, interval)
		},
	}
	ns.register(cmd, false)
	cmd.Flags().StringVar(&forWhat, "for", waitReady, "what to wait for: Ready (the cluster is Available) or Enrolled (its agent connected)")
	cmd.Flags().DurationVar(&timeout, "timeout", 20*time.Minute, "give up after this long (exit code 1)")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often to ask the hub")
	return cmd
}

// waitProgress is what a progress line reports; a line is printed when it
// changes.
type waitProgress struct {
	phase, controlPlane, workers, agent string
	conds                               map[string]string
}

func progressOf(cd *objects.ClusterDeployment) waitProgress {
	p := waitProgress{phase: cd.Status.Phase, controlPlane: cd.Status.ControlPlane, workers: cd.Status.Workers, agent: cd.Status.Agent, conds: map[string]string{}}
	for _, c := range cd.Status.Conditions {
		p.conds[c.Type] = conditionLine(c)
	}
	return p
}

func conditionLine(c objects.Condition) string {
	s := c.Status
	if c.Reason != "" {
		s += " " + c.Reason
	}
	if c.Status != "True" && c.Message != "" {
		s += ": " + oneLine(c.Message)
	}
	return s
}

// reached reports whether cd is at the wait's target.
func reached(cd *objects.ClusterDeployment, forWhat string) bool {
	if forWhat == waitEnrolled {
		return cd.Status.Agent == waitEnrolled
	}
	return cd.Status.Phase == objects.PhaseReady
}

// waitDeployment polls the deployment until it reaches forWhat, its phase
// turns Failed, or ctx ends, printing what changed on each poll.
func waitDeployment(ctx context.Context, g *globals, c *api.Client, ns, name, forWhat string, timeout, interval time.Duration) error {
	start := time.Now()
	var last *waitProgress
	for {
		rctx, cancel := context.WithTimeout(ctx, g.timeout)
		raw, err := c.Object(rctx, objects.KindClusterDeployment, ns, name)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return fmt.Errorf("wait clusterdeployment %s/%s: %w", ns, name, err)
		}
		objs, err := g.decodeObjects(objects.KindClusterDeployment, []json.RawMessage{raw})
		if err != nil {
			return err
		}
		cd := objs[0].(*objects.ClusterDeployment)
		if cd.Spec.Template == objects.TemplateAdopted {
			return usageError{fmt.Errorf("wait clusterdeployment %s/%s: it adopts an enrolled cluster (spec.template adopted); nothing is provisioned", ns, name)}
		}
		p := progressOf(cd)
		printProgress(g.stdout, last, p, time.Since(start))
		last = &p
		if reached(cd, forWhat) {
			fmt.Fprintf(g.stdout, "clusterdeployment %s/%s %s after %s\n", ns, name, forWhat, time.Since(start).Round(time.Second))
			return nil
		}
		if cd.Status.Phase == objects.PhaseFailed {
			return exitCodeError{code: exitError, err: fmt.Errorf("clusterdeployment %s/%s: phase Failed: %s", ns, name, failedBecause(cd))}
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
			continue
		}
		break
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return exitCodeError{code: exitError, err: fmt.Errorf("clusterdeployment %s/%s: timed out after %s waiting for %s (phase %s)", ns, name, timeout, forWhat, orNone(phaseOf(last)))}
	}
	return exitCodeError{code: exitError, err: fmt.Errorf("clusterdeployment %s/%s: wait interrupted: %w", ns, name, context.Cause(ctx))}
}

func phaseOf(p *waitProgress) string {
	if p == nil {
		return ""
	}
	return p.phase
}

// failedBecause names the False conditions of a Failed deployment.
func failedBecause(cd *objects.ClusterDeployment) string {
	var why []string
	for _, c := range cd.Status.Conditions {
		if c.Status == "False" {
			why = append(why, c.Type+" "+conditionLine(c))
		}
	}
	if len(why) == 0 {
		return "no condition says why"
	}
	return strings.Join(why, "; ")
}

// printProgress writes one line per change from last to p: the phase,
// machines and agent on one line, then each condition that changed.
func printProgress(w io.Writer, last *waitProgress, p waitProgress, elapsed time.Duration) {
	at := fmt.Sprintf("[%6s]", elapsed.Round(time.Second))
	if last == nil || last.phase != p.phase || last.controlPlane != p.controlPlane || last.workers != p.workers || last.agent != p.agent {
		fmt.Fprintf(w, "%s phase %s  control plane %s  workers %s  agent %s\n", at, orNone(p.phase), orNone(p.controlPlane), orNone(p.workers), orNone(p.agent))
	}
	types := make([]string, 0, len(p.conds))
	for t := range p.conds {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		if last != nil && last.conds[t] == p.conds[t] {
			continue
		}
		fmt.Fprintf(w, "%s   %-28s %s\n", at, t, p.conds[t])
	}
}

// getClusterTemplates is `tether get clustertemplates`: the templates with
// their Kubernetes version and providers, and the upgrades the
// ClusterTemplateChains of their namespace (or the system namespace)
// allow.
func getClusterTemplates(ctx context.Context, g *globals, c *api.Client, out *outputFlag, k *objects.Kind, namespace string, names []string) error {
	var raws []json.RawMessage
	if len(names) == 1 {
		raw, err := c.Object(ctx, objects.KindClusterTemplate, namespace, names[0])
		if err != nil {
			return fmt.Errorf("get %s %s/%s: %w", objects.KindClusterTemplate, namespace, names[0], err)
		}
		raws = []json.RawMessage{raw}
	} else {
		var err error
		if raws, err = c.Objects(ctx, objects.KindClusterTemplate, namespace); err != nil {
			return fmt.Errorf("get %s: %w", objects.KindClusterTemplate, err)
		}
	}
	objs, err := g.decodeObjects(objects.KindClusterTemplate, raws)
	if err != nil {
		return err
	}
	if out.format == "yaml" || out.format == "json" {
		if len(names) == 1 {
			return out.print(g.stdout, objs[0], nil)
		}
		return out.print(g.stdout, objs, nil)
	}
	chainRaws, err := c.Objects(ctx, objects.KindClusterTemplateChain, "")
	if err != nil {
		return fmt.Errorf("get %s: %w", objects.KindClusterTemplateChain, err)
	}
	chains, err := g.decodeObjects(objects.KindClusterTemplateChain, chainRaws)
	if err != nil {
		return err
	}
	now := time.Now()
	return out.print(g.stdout, nil, func() table { return clusterTemplateTable(k, objs, chains, now) })
}

// clusterTemplateTable is the kind's own table with UPGRADES (from the
// chains) and, with -o wide, KUBERNETES and PROVIDERS.
func clusterTemplateTable(k *objects.Kind, objs, chains []objects.Object, now time.Time) table {
	t := objectTable(k, objs, now)
	// The kind's columns are all narrow; the new ones go after them,
	// UPGRADES first, the wide ones last.
	t.headers = append(t.headers, "UPGRADES", "KUBERNETES", "PROVIDERS")
	t.wide = len(t.headers) - 2
	for i, o := range objs {
		ct := o.(*objects.ClusterTemplate)
		up := upgradesOf(ct.Metadata.Namespace, ct.Metadata.Name, chains)
		// The spec wins; the status has what the chart's annotations said
		// when the hub last rendered it.
		k8s, providers := ct.Spec.KubernetesVersion, ct.Spec.Providers
		if k8s == "" {
			k8s = ct.Status.KubernetesVersion
		}
		if len(providers) == 0 {
			providers = ct.Status.Providers
		}
		t.rows[i] = append(t.rows[i], orNone(strings.Join(up, ", ")), orNone(k8s), orNone(strings.Join(providers, ", ")))
	}
	return t
}

// upgradesOf lists the templates the chains allow template (in namespace
// ns) to move to: chains of its namespace and of the system namespace, as
// the provisioning controller reads them.
func upgradesOf(ns, template string, chains []objects.Object) []string {
	var out []string
	for _, o := range chains {
		ch := o.(*objects.ClusterTemplateChain)
		if cns := ch.Metadata.Namespace; cns != ns && cns != objects.SystemNamespace {
			continue
		}
		for _, st := range ch.Spec.SupportedTemplates {
			if st.Name != template {
				continue
			}
			for _, u := range st.AvailableUpgrades {
				if !slices.Contains(out, u.Name) {
					out = append(out, u.Name)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}
