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
	var force bool
	revoke := &cobra.Command{
		Use:   "revoke NAME [--force]",
		Short: "Revoke a console user: its token is refused from the next request on",
		Long: `Revoke a console user (admin only). The user is deleted and its token is
refused from the very next request; connections that used it get 401.

Revoking the last admin is refused, since nobody could then change the hub;
--force does it anyway. To get an admin back afterwards, stop the hub and run
'tether serve --reset-admin --data-dir DIR' on its data dir.`,
		Example: `  tether user revoke alice
  tether user revoke admin --force`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			u, err := c.RevokeUser(ctx, args[0], force)
			if err != nil {
				return fmt.Errorf("revoke user %q: %w", args[0], err)
			}
			fmt.Fprintf(g.stdout, "user %q (%s) revoked\n", u.Name, u.Role)
			return nil
		},
	}
	revoke.Flags().BoolVar(&force, "force", false, "revoke even the last admin (recover with 'tether serve --reset-admin')")
	cmd.AddCommand(create, revoke)
	return cmd
}
