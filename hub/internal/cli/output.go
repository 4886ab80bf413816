package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// outputFlag is -o: table (default), wide, yaml or json.
type outputFlag struct {
	format string
	allow  []string
}

func addOutputFlag(cmd *cobra.Command, o *outputFlag, allow ...string) {
	o.allow = allow
	cmd.Flags().StringVarP(&o.format, "output", "o", "", "output format: "+strings.Join(allow, "|"))
}

func (o *outputFlag) validate() error {
	if o.format == "" {
		return nil
	}
	for _, a := range o.allow {
		if o.format == a {
			return nil
		}
	}
	return usageError{fmt.Errorf("--output %q: want one of %s", o.format, strings.Join(o.allow, ", "))}
}

// table is a printable table; wide columns are shown only with -o wide.
type table struct {
	headers []string
	wide    int // the first wide column; len(headers) when none
	rows    [][]string
}

// print writes v as yaml or json, or t as a table.
func (o *outputFlag) print(w io.Writer, v any, t func() table) error {
	switch o.format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	tb := t()
	n := tb.wide
	if o.format == "wide" || n == 0 {
		n = len(tb.headers)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(tb.headers[:n], "\t"))
	for _, r := range tb.rows {
		fmt.Fprintln(tw, strings.Join(r[:n], "\t"))
	}
	return tw.Flush()
}

// age formats the time since t like kubectl does.
func age(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "<never>"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
