package cli

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/hub/internal/alerting"
)

// alertTable is `tether get alerts`: one row per alert; wide adds the
// summary and each receiver's last delivery.
func alertTable(rows []alerting.AlertView, now time.Time) table {
	t := table{headers: []string{"ALERT", "STATE", "SINCE", "LABELS", "RECEIVERS", "SUMMARY", "DELIVERIES"}, wide: 5}
	for _, a := range rows {
		var ls []string
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range a.Labels {
				if k != "alertname" && !yield(k) {
					return
				}
			}
		}) {
			ls = append(ls, k+"="+a.Labels[k])
		}
		t.rows = append(t.rows, []string{a.Name, a.State, age(a.Since, now), orNone(strings.Join(ls, ",")),
			orNone(strings.Join(a.Receivers, ",")), orNone(oneLine(a.Annotations["summary"])), orNone(deliveries(a.Deliveries, now))})
	}
	return t
}

// deliveries is the last outcome per receiver and integration:
// "ops/p/team webhook ok 2m ago".
func deliveries(ds []alerting.Delivery, now time.Time) string {
	last := map[string]alerting.Delivery{}
	var keys []string
	for _, d := range ds {
		k := d.Receiver + " " + d.Integration
		if _, ok := last[k]; !ok {
			keys = append(keys, k)
		}
		last[k] = d
	}
	var out []string
	for _, k := range keys {
		d := last[k]
		st := "ok"
		if d.Error != "" {
			st = "failed (" + oneLine(d.Error) + ")"
		}
		out = append(out, fmt.Sprintf("%s %s %s %s ago", k, d.Status, st, age(d.At, now)))
	}
	return strings.Join(out, "; ")
}

func silenceTable(rows []alerting.SilenceView, now time.Time) table {
	t := table{headers: []string{"ID", "STATE", "MATCHERS", "ENDS", "CREATED BY", "COMMENT"}, wide: 4}
	for _, s := range rows {
		ends := s.EndsAt.UTC().Format(time.RFC3339)
		if s.State != "expired" {
			ends = "in " + age(now, s.EndsAt)
		}
		t.rows = append(t.rows, []string{s.ID, s.State, strings.Join(s.Matchers, ","), ends, orNone(s.CreatedBy), orNone(oneLine(s.Comment))})
	}
	return t
}

func newSilenceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "silence",
		Short: "Mute alerts matching label matchers for a while",
	}
	var (
		matchers []string
		duration time.Duration
		comment  string
		out      outputFlag
	)
	create := &cobra.Command{
		Use:   "create --matcher M [--matcher M...] --duration D",
		Short: "Create a silence (admin only) and print its ID",
		Long: `Create a silence: alerts whose labels match every matcher are not sent to
receivers until it ends. Matchers are Alertmanager's: name="value",
name!="value", name=~"regex", name!~"regex".`,
		Example: `  tether silence create --matcher cluster=edge-1 --matcher 'alertname=~"Tether.*"' --duration 2h --comment maintenance`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(0, "no arguments")(cmd, args); err != nil {
				return err
			}
			if len(matchers) == 0 || duration <= 0 {
				return usageError{fmt.Errorf("%s: --matcher and a positive --duration are required", cmd.CommandPath())}
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
			s, err := c.CreateSilence(ctx, alerting.SilenceRequest{Matchers: matchers, Duration: duration.String(), Comment: comment, CreatedBy: os.Getenv("USER")})
			if err != nil {
				return fmt.Errorf("create silence: %w", err)
			}
			if out.format != "" {
				return out.print(g.stdout, s, nil)
			}
			fmt.Fprintln(g.stdout, s.ID)
			return nil
		},
	}
	create.Flags().StringArrayVar(&matchers, "matcher", nil, `label matcher, e.g. cluster="edge-1" (repeatable)`)
	create.Flags().DurationVar(&duration, "duration", 0, "how long the silence lasts, e.g. 2h")
	create.Flags().StringVar(&comment, "comment", "", "why")
	addOutputFlag(create, &out, "yaml", "json")
	var listOut outputFlag
	list := &cobra.Command{
		Use:   "list",
		Short: "List silences (expired ones for a day after they end)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := listOut.validate(); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			ss, err := c.Silences(ctx)
			if err != nil {
				return fmt.Errorf("list silences: %w", err)
			}
			now := time.Now()
			return listOut.print(g.stdout, ss, func() table { return silenceTable(ss, now) })
		},
	}
	addOutputFlag(list, &listOut, "wide", "yaml", "json")
	expire := &cobra.Command{
		Use:   "expire ID",
		Short: "End a silence now (admin only)",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			if _, err := c.ExpireSilence(ctx, args[0]); err != nil {
				return fmt.Errorf("expire silence %s: %w", args[0], err)
			}
			fmt.Fprintf(g.stdout, "silence/%s expired\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, expire)
	return cmd
}
