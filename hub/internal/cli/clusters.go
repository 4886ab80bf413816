package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/hub/internal/api"
)

func clusterTable(cs []api.Cluster, now time.Time) table {
	t := table{headers: []string{"NAME", "STATE", "LAST SEEN", "AGENT", "ADDRESS", "REVISION", "LABELS", "CERT EXPIRES"}, wide: 5}
	for _, c := range cs {
		seen := age(c.LastSeen, now)
		if c.State == api.StateConnected {
			seen = "now"
		}
		certExp := "<none>"
		if !c.CertNotAfter.IsZero() {
			certExp = c.CertNotAfter.Local().Format(time.RFC3339)
		}
		t.rows = append(t.rows, []string{
			c.Name, c.State, seen, orNone(c.AgentVersion), orNone(c.Address),
			fmt.Sprint(c.Revision), orNone(formatLabels(c.Labels)), certExp,
		})
	}
	return t
}

func formatLabels(l map[string]string) string {
	keys := slices.Sorted(maps.Keys(l))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

func describeCluster(g *globals, c api.Cluster, now time.Time) {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "<never>"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), age(t, now))
	}
	fmt.Fprintf(tw, "Name:\t%s\n", c.Name)
	fmt.Fprintf(tw, "State:\t%s\n", c.State)
	fmt.Fprintf(tw, "Labels:\t%s\n", orNone(formatLabels(c.Labels)))
	fmt.Fprintf(tw, "Created:\t%s\n", ts(c.Created))
	fmt.Fprintf(tw, "Enrolled:\t%s\n", ts(c.Enrolled))
	fmt.Fprintf(tw, "Last seen:\t%s\n", ts(c.LastSeen))
	if c.State == api.StateConnected {
		fmt.Fprintf(tw, "Connected since:\t%s\n", ts(c.ConnectedSince))
		fmt.Fprintf(tw, "Tunnel bytes:\tin %d, out %d (TLS included)\n", c.BytesIn, c.BytesOut)
		fmt.Fprintf(tw, "Agent outbox:\t%d pending, %d dropped while offline\n", c.OutboxPending, c.OutboxDropped)
		for _, k := range c.OutboxKinds {
			fmt.Fprintf(tw, "  %s:\t%d pending (%d bytes), %d dropped, %d dead-lettered\n", k.Kind, k.Pending, k.Bytes, k.Dropped, k.DeadLettered)
		}
	}
	fmt.Fprintf(tw, "Address:\t%s\n", orNone(c.Address))
	fmt.Fprintf(tw, "Hostname:\t%s\n", orNone(c.Hostname))
	fmt.Fprintf(tw, "Agent version:\t%s\n", orNone(c.AgentVersion))
	fmt.Fprintf(tw, "Desired revision:\t%d\n", c.Revision)
	if !c.CertNotAfter.IsZero() {
		fmt.Fprintf(tw, "Certificate expires:\t%s\n", c.CertNotAfter.Local().Format(time.RFC3339))
	}
	if a := c.Agent; a != nil {
		if a.Error != "" {
			fmt.Fprintf(tw, "Agent:\tunreachable: %s\n", a.Error)
		} else {
			fmt.Fprintf(tw, "Agent:\tanswered over the tunnel (version %s, link %s, revision %d, clock skew %s)\n",
				a.Version, a.LinkState, a.HaveRevision, now.Sub(a.Now).Round(time.Millisecond))
		}
	}
	tw.Flush()
	describeTargets(g.stdout, c.Targets, now)
}

func newLabelCmd(g *globals) *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{
		Use:   "label cluster NAME KEY=VALUE... [KEY-]...",
		Short: "Set or remove labels on a cluster",
		Example: `  tether label cluster edge-paris-1 region=eu-west tier=edge
  tether label cluster edge-paris-1 tier-`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || args[0] != "cluster" && args[0] != "clusters" {
				return usageError{fmt.Errorf("%s: only clusters have labels here: label cluster NAME KEY=VALUE", cmd.CommandPath())}
			}
			if len(args) < 3 {
				return usageError{fmt.Errorf("%s: want cluster NAME and at least one KEY=VALUE or KEY-", cmd.CommandPath())}
			}
			return out.validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			labels := map[string]string{}
			for _, a := range args[2:] {
				if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
					labels[k] = ""
					continue
				}
				k, v, ok := strings.Cut(a, "=")
				if !ok || k == "" || v == "" {
					return usageError{fmt.Errorf("label %q: want KEY=VALUE or KEY-", a)}
				}
				labels[k] = v
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			cl, err := c.LabelCluster(ctx, args[1], labels)
			if err != nil {
				return fmt.Errorf("label cluster %q: %w", args[1], err)
			}
			return out.print(g.stdout, cl, func() table { return clusterTable([]api.Cluster{cl}, time.Now()) })
		},
	}
	addOutputFlag(cmd, &out, "wide", "yaml", "json")
	return cmd
}
