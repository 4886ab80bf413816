package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/fleet"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage join tokens that let agents enrol",
	}
	cmd.AddCommand(newTokenCreateCmd(g))
	return cmd
}

func newTokenCreateCmd(g *globals) *cobra.Command {
	var (
		cluster string
		ttl     time.Duration
		uses    int
		labels  []string
		out     outputFlag
	)
	cmd := &cobra.Command{
		Use:   "token create --cluster NAME [--ttl 1h] [--uses 1]",
		Short: "Create a join token for a cluster",
		Long: `Create a join token for a cluster, creating the cluster in state Pending if
it is new. The token embeds the hub CA fingerprint, so the agent can trust
the hub without any other file:

  tether-agent run --hub HUB:7070 --token TOKEN --data-dir /var/lib/tether-agent

The token is printed once; the hub keeps only its hash.`,
		Example: `  tether token create --cluster edge-paris-1
  tether token create --cluster edge-paris-1 --ttl 24h --uses 3 --label region=eu-west`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("%s takes no arguments; use --cluster NAME", cmd.CommandPath())}
			}
			if cluster == "" {
				return usageError{fmt.Errorf("%s: --cluster is required", cmd.CommandPath())}
			}
			if err := fleet.ValidateName(cluster); err != nil {
				return usageError{err}
			}
			return out.validate()
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			lm := map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return usageError{fmt.Errorf("--label %q: want KEY=VALUE", l)}
				}
				lm[k] = v
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			info, err := c.CreateToken(ctx, api.TokenRequest{Cluster: cluster, TTL: ttl.String(), Uses: uses, Labels: lm})
			if err != nil {
				return fmt.Errorf("create token for cluster %q: %w", cluster, err)
			}
			if out.format == "" {
				fmt.Fprintln(g.stdout, info.Token)
				fmt.Fprintf(g.stderr, "token %s for cluster %q: %d use(s), expires %s\n", info.ID, info.Cluster, info.Uses, info.Expires.Local().Format(time.RFC3339))
				return nil
			}
			return out.print(g.stdout, info, nil)
		},
	}
	cmd.Use = "create --cluster NAME [--ttl 1h] [--uses 1]"
	cmd.Flags().StringVar(&cluster, "cluster", "", "cluster the token enrols (required)")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	cmd.Flags().IntVar(&uses, "uses", 1, "how many enrolments the token allows")
	cmd.Flags().StringSliceVar(&labels, "label", nil, "label for a new cluster, KEY=VALUE (repeatable)")
	addOutputFlag(cmd, &out, "yaml", "json")
	return cmd
}
