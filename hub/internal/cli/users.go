package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/hub/internal/api"
)

func newUserCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Manage console users",
	}
	var (
		role string
		out  outputFlag
	)
	create := &cobra.Command{
		Use:   "create NAME [--role viewer|admin]",
		Short: "Create a console user and print its token (shown once)",
		Long: `Create a console user. Viewers may read everything; admins may also apply,
delete, label and create tokens and users. The token is printed once; the
hub keeps only its hash. Give the user a config file with the hub's server
and CA (from the admin config) and this token.`,
		Example: `  tether user create alice --role viewer`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(1, "NAME")(cmd, args); err != nil {
				return err
			}
			if _, err := api.ParseRole(role); err != nil {
				return usageError{fmt.Errorf("--role: %w", err)}
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
			r, _ := api.ParseRole(role)
			u, err := c.CreateUser(ctx, args[0], r)
			if err != nil {
				return fmt.Errorf("create user %q: %w", args[0], err)
			}
			if out.format != "" {
				return out.print(g.stdout, u, nil)
			}
			fmt.Fprintln(g.stdout, u.Token)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", string(api.RoleViewer), "viewer or admin")
	addOutputFlag(create, &out, "yaml", "json")
	cmd.AddCommand(create)
	return cmd
}
