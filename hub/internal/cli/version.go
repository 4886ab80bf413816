package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/protocol/version"
)

type versionInfo struct {
	Client string `json:"client"`
	Go     string `json:"go"`
	Hub    string `json:"hub,omitempty"`
	// HubError says why the hub's version is missing.
	HubError string `json:"hubError,omitempty"`
}

func newVersionCmd(g *globals) *cobra.Command {
	var (
		out    outputFlag
		client bool
	)
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client version and, if reachable, the hub's",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.validate(); err != nil {
				return err
			}
			v := versionInfo{Client: version.Get(), Go: runtime.Version()}
			if !client {
				if c, err := g.client(); err != nil {
					v.HubError = err.Error()
				} else {
					ctx, cancel := g.ctx(cmd)
					defer cancel()
					if hv, err := c.Version(ctx); err != nil {
						v.HubError = err.Error()
					} else {
						v.Hub = hv.Version
					}
				}
			}
			if out.format != "" {
				return out.print(g.stdout, v, nil)
			}
			fmt.Fprintf(g.stdout, "Client: %s (%s)\n", v.Client, v.Go)
			switch {
			case v.Hub != "":
				fmt.Fprintf(g.stdout, "Hub:    %s\n", v.Hub)
			case !client:
				fmt.Fprintf(g.stdout, "Hub:    unreachable: %s\n", v.HubError)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&client, "client", false, "print only the client version; do not contact the hub")
	addOutputFlag(cmd, &out, "yaml", "json")
	return cmd
}
