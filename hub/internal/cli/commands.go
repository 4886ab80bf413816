package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/objects"
)

// nsFlags are -n and -A.
type nsFlags struct {
	namespace string
	all       bool
}

func (n *nsFlags) register(cmd *cobra.Command, withAll bool) {
	cmd.Flags().StringVarP(&n.namespace, "namespace", "n", objects.DefaultNamespace, "namespace of the objects")
	if withAll {
		cmd.Flags().BoolVarP(&n.all, "all-namespaces", "A", false, "list objects of every namespace")
	}
}

func (n *nsFlags) list() string {
	if n.all {
		return ""
	}
	return n.namespace
}

func newGetCmd(g *globals) *cobra.Command {
	var (
		out     outputFlag
		ns      nsFlags
		cluster string
	)
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "List objects of a kind, or show one",
		Long:  getLong(g),
		Example: `  tether get clusters -o wide
  tether get services --cluster edge-paris-1
  tether get clusterdeployments -A
  tether get servicetemplate simple-nginx-1.0.0 -n tether-system -o yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{fmt.Errorf("%s: name a kind, e.g. clusters (see --help)", cmd.CommandPath())}
			}
			if len(args) > 2 {
				return usageError{fmt.Errorf("%s: at most one name, got %d", cmd.CommandPath(), len(args)-1)}
			}
			if _, err := g.lookupKind(args[0]); err != nil {
				return err
			}
			return out.validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			k, _ := g.lookupKind(args[0])
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			now := time.Now()
			switch k.special {
			case "clusters":
				return getClusters(ctx, g, c, &out, args[1:])
			case "services":
				only := cluster
				if len(args) == 2 {
					only = args[1]
				}
				rows, err := c.Services(ctx, only)
				if err != nil {
					return fmt.Errorf("get services: %w", err)
				}
				return out.print(g.stdout, rows, func() table { return serviceTable(rows, now) })
			case "charts":
				cs, err := c.Charts(ctx)
				if err != nil {
					return fmt.Errorf("get charts: %w", err)
				}
				return out.print(g.stdout, cs, func() table { return chartTable(cs, now) })
			case "alerts":
				as, err := c.Alerts(ctx)
				if err != nil {
					return fmt.Errorf("get alerts: %w", err)
				}
				return out.print(g.stdout, as, func() table { return alertTable(as, now) })
			}
			if k.obj.Name() == objects.KindClusterTemplate {
				where := ns.list()
				if len(args) == 2 {
					where = ns.namespace
				}
				return getClusterTemplates(ctx, g, c, &out, k.obj, where, args[1:])
			}
			if len(args) == 2 {
				raw, err := c.Object(ctx, k.obj.Name(), ns.namespace, args[1])
				if err != nil {
					return fmt.Errorf("get %s %s/%s: %w", k.obj.Name(), ns.namespace, args[1], err)
				}
				objs, err := g.decodeObjects(k.obj.Name(), []json.RawMessage{raw})
				if err != nil {
					return err
				}
				return out.print(g.stdout, objs[0], func() table { return objectTable(k.obj, objs, now) })
			}
			raws, err := c.Objects(ctx, k.obj.Name(), ns.list())
			if err != nil {
				return fmt.Errorf("get %s: %w", k.obj.Name(), err)
			}
			objs, err := g.decodeObjects(k.obj.Name(), raws)
			if err != nil {
				return err
			}
			return out.print(g.stdout, objs, func() table { return objectTable(k.obj, objs, now) })
		},
	}
	addOutputFlag(cmd, &out, "wide", "yaml", "json")
	ns.register(cmd, true)
	cmd.Flags().StringVar(&cluster, "cluster", "", "with services: only this cluster's")
	return cmd
}

func getClusters(ctx context.Context, g *globals, c *api.Client, out *outputFlag, names []string) error {
	var cs []api.Cluster
	var err error
	if len(names) == 1 {
		cl, err := c.Cluster(ctx, names[0], false)
		if err != nil {
			return fmt.Errorf("get cluster %q: %w", names[0], err)
		}
		return out.print(g.stdout, cl, func() table { return clusterTable([]api.Cluster{cl}, time.Now()) })
	}
	if cs, err = c.Clusters(ctx); err != nil {
		return fmt.Errorf("get clusters: %w", err)
	}
	return out.print(g.stdout, cs, func() table { return clusterTable(cs, time.Now()) })
}

// getLong is get's help: every view and kind with its short names.
func getLong(g *globals) string {
	names := g.kindNames()
	names[1] += " (per cluster, with state)"
	short := []string{"cl", "svc"}
	for _, k := range g.kinds.Kinds() {
		short = append(short, k.Short()...)
	}
	return wrap("List objects of a kind, or show one. Kinds: "+strings.Join(names, ", ")+" (short forms: "+strings.Join(short, ", ")+").", 76)
}

func newDescribeCmd(g *globals) *cobra.Command {
	var ns nsFlags
	cmd := &cobra.Command{
		Use:   "describe KIND NAME",
		Short: "Show one object in detail; a cluster is asked over its tunnel",
		Example: `  tether describe cluster edge-paris-1
  tether describe clusterdeployment edge-paris-1 -n acme`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(2, "KIND NAME")(cmd, args); err != nil {
				return err
			}
			_, err := g.lookupKind(args[0])
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			k, _ := g.lookupKind(args[0])
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			switch k.special {
			case "clusters":
				cl, err := c.Cluster(ctx, args[1], true)
				if err != nil {
					return fmt.Errorf("describe cluster %q: %w", args[1], err)
				}
				describeCluster(g, cl, time.Now())
				rows, err := c.Services(ctx, args[1])
				if err != nil {
					return err
				}
				if len(rows) > 0 {
					fmt.Fprintln(g.stdout, "\nServices:")
					return (&outputFlag{}).print(g.stdout, rows, func() table { return serviceTable(rows, time.Now()) })
				}
				return nil
			case "services", "charts", "alerts":
				return usageError{fmt.Errorf("describe %s: use get %s", args[0], k.special)}
			}
			raw, err := c.Object(ctx, k.obj.Name(), ns.namespace, args[1])
			if err != nil {
				return fmt.Errorf("describe %s %s/%s: %w", k.obj.Name(), ns.namespace, args[1], err)
			}
			objs, err := g.decodeObjects(k.obj.Name(), []json.RawMessage{raw})
			if err != nil {
				return err
			}
			b, err := objects.Encode(objs[0], "yaml")
			if err != nil {
				return err
			}
			if _, err = g.stdout.Write(b); err != nil {
				return err
			}
			return describeSections(g.stdout, k.obj.Describe(objs[0]))
		},
	}
	ns.register(cmd, false)
	return cmd
}

func newDeleteCmd(g *globals) *cobra.Command {
	var (
		ns    nsFlags
		files []string
	)
	cmd := &cobra.Command{
		Use:   "delete (KIND NAME | -f FILE)",
		Short: "Delete objects; deleting a cluster revokes its agent",
		Long: `Delete objects by kind and name, or every object in files (-f). Deleting a
service from a ClusterDeployment or deleting the object removes the release
from the cluster (through an explicit tombstone, so an agent offline for
days still learns of it). Deleting a cluster removes it from the fleet,
revokes its agent's certificate and join tokens and closes its connection;
workloads already on the cluster keep running.`,
		Example: `  tether delete cluster edge-paris-1
  tether delete clusterdeployment edge-paris-1 -n acme
  tether delete -f services.yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(files) > 0 {
				if len(args) != 0 {
					return usageError{fmt.Errorf("%s: give either -f or KIND NAME", cmd.CommandPath())}
				}
				return nil
			}
			if err := exactArgs(2, "KIND NAME")(cmd, args); err != nil {
				return err
			}
			k, err := g.lookupKind(args[0])
			if err == nil && (k.special == "services" || k.special == "charts" || k.special == "alerts") {
				return usageError{fmt.Errorf("%s: %s cannot be deleted directly", cmd.CommandPath(), k.special)}
			}
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			if len(files) > 0 {
				return deleteFiles(ctx, g, c, files)
			}
			k, _ := g.lookupKind(args[0])
			if k.special == "clusters" {
				if err := c.DeleteCluster(ctx, args[1]); err != nil {
					return fmt.Errorf("delete cluster %q: %w", args[1], err)
				}
				fmt.Fprintf(g.stdout, "cluster %q deleted; its agent certificate is revoked\n", args[1])
				return nil
			}
			if err := c.DeleteObject(ctx, k.obj.Name(), ns.namespace, args[1]); err != nil {
				return fmt.Errorf("delete %s %s/%s: %w", k.obj.Name(), ns.namespace, args[1], err)
			}
			fmt.Fprintf(g.stdout, "%s/%s deleted\n", strings.ToLower(k.obj.Name()), args[1])
			return nil
		},
	}
	ns.register(cmd, false)
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "files or directories whose objects to delete")
	return cmd
}

func deleteFiles(ctx context.Context, g *globals, c *api.Client, paths []string) error {
	srcs, err := readSources(g.stdin, paths)
	if err != nil {
		return err
	}
	for _, s := range srcs {
		objs, err := g.kinds.Decode(s.data, s.name)
		if err != nil {
			return err
		}
		// Users before what they use: reverse of the apply order.
		for i := len(objs) - 1; i >= 0; i-- {
			md := objs[i].GetHeader()
			ns := md.Metadata.Namespace
			if ns == "" {
				ns = objects.DefaultNamespace
			}
			if err := c.DeleteObject(ctx, md.Kind, ns, md.Metadata.Name); err != nil {
				if api.IsNotFound(err) {
					fmt.Fprintf(g.stdout, "%s/%s not found\n", strings.ToLower(md.Kind), md.Metadata.Name)
					continue
				}
				return fmt.Errorf("delete %s %s/%s: %w", md.Kind, ns, md.Metadata.Name, err)
			}
			fmt.Fprintf(g.stdout, "%s/%s deleted\n", strings.ToLower(md.Kind), md.Metadata.Name)
		}
	}
	return nil
}

// source is one file's content.
type source struct {
	name string
	data []byte
}

// readSources reads FILE, every *.yaml|*.yml|*.json in DIR (sorted), or
// stdin for "-".
func readSources(stdin io.Reader, paths []string) ([]source, error) {
	var out []source
	for _, p := range paths {
		if p == "-" {
			b, err := io.ReadAll(io.LimitReader(stdin, 8<<20+1))
			if err != nil {
				return nil, fmt.Errorf("read stdin: %w", err)
			}
			out = append(out, source{"stdin", b})
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			out = append(out, source{p, b})
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, e := range ents {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					names = append(names, e.Name())
				}
			}
		}
		sort.Strings(names)
		if len(names) == 0 {
			return nil, fmt.Errorf("%s: no .yaml, .yml or .json files", p)
		}
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join(p, n))
			if err != nil {
				return nil, err
			}
			out = append(out, source{filepath.Join(p, n), b})
		}
	}
	return out, nil
}

// Values of apply's --dry-run, as kubectl's.
const (
	dryRunNone   = "none"
	dryRunClient = "client"
	dryRunServer = "server"
)

func newApplyCmd(g *globals) *cobra.Command {
	var (
		files  []string
		out    outputFlag
		dryRun string
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update objects from YAML or JSON files",
		Long: wrap(`Create or update objects from YAML (multi-document) or JSON: `+strings.Join(g.kinds.Names(), ", ")+`.
apiVersion tether.dev/v1alpha1; k0rdent manifests
(k0rdent.mirantis.com/v1alpha1 or v1beta1) are accepted too. Each file is
applied atomically: if any object in it is invalid, nothing from that file
is stored, and the error names the document, object and field. Files are
applied in order; a directory's files in name order.`, 76) + `

--dry-run=server sends each file to the hub, which runs the whole apply
(defaulting, validation, reference and ServiceTemplateChain checks) and
stores nothing: the output says what would happen ("created", "configured",
"unchanged", each followed by "(server dry run)"), with the warnings apply
would print, and -o yaml|json shows the objects as they would be stored.
--dry-run=client decodes, defaults and validates the files locally, without
a hub ("valid (client dry run)"): references to other objects are not
checked. See also 'tether diff'.`,
		Example: `  tether apply -f services.yaml
  tether apply -f manifests/
  cat svc.yaml | tether apply -f -
  tether apply -f services.yaml --dry-run=server`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("%s: pass files with -f, not as arguments", cmd.CommandPath())}
			}
			if len(files) == 0 {
				return usageError{fmt.Errorf("%s: -f FILE|DIR|- is required", cmd.CommandPath())}
			}
			switch dryRun {
			case dryRunNone, dryRunClient, dryRunServer:
			default:
				return usageError{fmt.Errorf("%s: --dry-run %q: want none, client or server", cmd.CommandPath(), dryRun)}
			}
			return out.validate()
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			srcs, err := readSources(g.stdin, files)
			if err != nil {
				return err
			}
			if dryRun == dryRunClient {
				return applyClientDryRun(g, &out, srcs)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			suffix := ""
			if dryRun == dryRunServer {
				suffix = " (server dry run)"
			}
			var all []api.ApplyResult
			for _, s := range srcs {
				var res []api.ApplyResult
				if dryRun == dryRunServer {
					res, err = c.DryRunApply(ctx, s.name, s.data)
				} else {
					res, err = c.Apply(ctx, s.name, s.data)
				}
				if err != nil {
					return fmt.Errorf("apply %s: %w", s.name, err)
				}
				all = append(all, res...)
				for _, r := range res {
					printWarnings(g.stderr, r.Kind, r.Namespace, r.Name, r.Warnings)
				}
				if out.format == "" {
					for _, r := range res {
						fmt.Fprintf(g.stdout, "%s/%s %s%s\n", strings.ToLower(r.Kind), r.Name, r.Action, suffix)
					}
				}
			}
			if out.format != "" {
				return out.print(g.stdout, all, nil)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file, directory or - for stdin (repeatable)")
	cmd.Flags().StringVar(&dryRun, "dry-run", dryRunNone, "none, client (check locally) or server (the hub runs the apply and stores nothing)")
	addOutputFlag(cmd, &out, "yaml", "json")
	return cmd
}

// printWarnings prints apply's warnings for one object.
func printWarnings(w io.Writer, kind, ns, name string, warnings []string) {
	for _, x := range warnings {
		fmt.Fprintf(w, "Warning: %s %s/%s: %s\n", kind, ns, name, x)
	}
}

// applyClientDryRun decodes, defaults and validates srcs with the CLI's
// own kinds, and prints them (or the objects with -o).
func applyClientDryRun(g *globals, out *outputFlag, srcs []source) error {
	var all []objects.Object
	for _, s := range srcs {
		objs, err := g.kinds.Decode(s.data, s.name)
		if err != nil {
			return fmt.Errorf("apply %s: %w", s.name, err)
		}
		for _, o := range objs {
			h := o.GetHeader()
			printWarnings(g.stderr, h.Kind, h.Metadata.Namespace, h.Metadata.Name, g.kinds.Warnings(o))
			if out.format == "" {
				fmt.Fprintf(g.stdout, "%s/%s valid (client dry run)\n", strings.ToLower(h.Kind), h.Metadata.Name)
			}
		}
		all = append(all, objs...)
	}
	if out.format != "" {
		return out.print(g.stdout, all, nil)
	}
	return nil
}

func newChartCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "chart",
		Short: "Manage charts stored in the hub",
	}
	var out outputFlag
	push := &cobra.Command{
		Use:   "push DIR|TGZ",
		Short: "Upload a chart (directory or .tgz) into the hub, for air-gapped fleets",
		Long: `Upload a chart into the hub's content-addressed chart store. Templates use
it with sourceRef {kind: HelmRepository, name: tether-local}. Agents fetch
charts from the hub only, by digest, through their tunnel.`,
		Example: `  tether chart push bundles/services/simple-nginx
  tether chart push podinfo-6.14.1.tgz`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := exactArgs(1, "DIR or TGZ")(cmd, args); err != nil {
				return err
			}
			return out.validate()
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			archive, err := readChart(args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			ch, err := c.PushChart(ctx, archive)
			if err != nil {
				return fmt.Errorf("push chart %s: %w", args[0], err)
			}
			if out.format != "" {
				return out.print(g.stdout, ch, nil)
			}
			fmt.Fprintf(g.stdout, "chart %s %s pushed (%s, %d bytes)\n", ch.Name, ch.Version, ch.Digest, ch.Size)
			return nil
		},
	}
	addOutputFlag(push, &out, "yaml", "json")
	cmd.AddCommand(push)
	return cmd
}

func readChart(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		b, err := charts.PackageDir(path)
		if err != nil {
			return nil, fmt.Errorf("package chart %s: %w", path, err)
		}
		return b, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		return nil, errors.New(path + ": not a gzipped chart archive (.tgz) or a chart directory")
	}
	return b, nil
}
