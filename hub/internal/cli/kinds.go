package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/objects"
)

// kind is what `get`, `describe` and `delete` accept: a registered object
// kind, or one of the special views.
type kind struct {
	// obj is the object kind; nil for the special views.
	obj     *objects.Kind
	special string // "clusters", "services", "charts", "alerts"
}

// views are the special views, which are not object kinds.
var views = []struct {
	name    string
	aliases []string
}{
	{"clusters", []string{"clusters", "cluster", "cl"}},
	{"services", []string{"services", "service", "svc"}},
	{"charts", []string{"charts", "chart"}},
	{"alerts", []string{"alerts", "alert"}},
}

func (g *globals) lookupKind(s string) (kind, error) {
	ls := strings.ToLower(s)
	for _, v := range views {
		if slices.Contains(v.aliases, ls) {
			return kind{special: v.name}, nil
		}
	}
	if k := g.kinds.Lookup(s); k != nil {
		return kind{obj: k}, nil
	}
	return kind{}, usageError{fmt.Errorf("unknown kind %q; known kinds: %s", s, strings.Join(g.kindNames(), ", "))}
}

// kindNames are the plural names of the views and kinds, as help shows them.
func (g *globals) kindNames() []string {
	var names []string
	for _, v := range views {
		names = append(names, v.name)
	}
	for _, k := range g.kinds.Kinds() {
		names = append(names, k.Plural())
	}
	return names
}

// decodeObjects turns API JSON into typed objects.
func (g *globals) decodeObjects(kindName string, raws []json.RawMessage) ([]objects.Object, error) {
	out := make([]objects.Object, 0, len(raws))
	for _, r := range raws {
		o := g.kinds.New(kindName)
		if o == nil {
			return nil, fmt.Errorf("unknown kind %q", kindName)
		}
		if err := json.Unmarshal(r, o); err != nil {
			return nil, fmt.Errorf("decode %s from hub: %w", kindName, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// objectTable is the table of objects of kind k: NAMESPACE (for namespaced
// kinds), NAME, then the kind's columns.
func objectTable(k *objects.Kind, objs []objects.Object, now time.Time) table {
	t := table{}
	if k.Namespaced() {
		t.headers = append(t.headers, "NAMESPACE")
	}
	t.headers = append(t.headers, "NAME")
	cols := k.Columns()
	t.wide = len(t.headers) + len(cols)
	for i, c := range cols {
		if c.Wide && t.wide == len(t.headers)+len(cols) {
			t.wide = len(t.headers) + i
		}
	}
	for _, c := range cols {
		t.headers = append(t.headers, c.Header)
	}
	for _, o := range objs {
		md := o.GetHeader().Metadata
		var row []string
		if k.Namespaced() {
			row = append(row, md.Namespace)
		}
		row = append(row, md.Name)
		for _, c := range cols {
			switch {
			case c.Value != nil:
				row = append(row, c.Value(o))
			case c.Age(o) == nil:
				row = append(row, "<unknown>")
			default:
				row = append(row, age(*c.Age(o), now))
			}
		}
		t.rows = append(t.rows, row)
	}
	return t
}

// describeSections writes the sections describe shows after the object.
func describeSections(w io.Writer, secs []objects.Section) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, s := range secs {
		fmt.Fprintf(tw, "\n%s:\n", s.Title)
		if len(s.Items) == 0 {
			fmt.Fprintln(tw, "  <none>")
		}
		for _, it := range s.Items {
			fmt.Fprintf(tw, "  %s:\t%s\n", it.Key, oneLine(it.Value))
		}
	}
	return tw.Flush()
}

// wrap breaks text into lines of at most width characters.
func wrap(text string, width int) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(text) {
		switch {
		case i == 0:
		case n+1+len(w) > width:
			b.WriteString("\n")
			n = 0
		default:
			b.WriteString(" ")
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

func serviceTable(rows []api.Service, now time.Time) table {
	t := table{headers: []string{"CLUSTER", "NAMESPACE", "NAME", "STATE", "REVISION", "AGE", "MESSAGE", "TEMPLATE", "CHART", "SOURCE"}, wide: 7}
	for _, r := range rows {
		ag := "<none>"
		if !r.Time.IsZero() {
			ag = age(r.Time, now)
		}
		rev := fmt.Sprint(r.Revision)
		if r.DesiredRevision > r.Revision {
			rev = fmt.Sprintf("%d (want %d)", r.Revision, r.DesiredRevision)
		}
		t.rows = append(t.rows, []string{r.Cluster, r.Namespace, r.Name, r.State, rev, ag, orNone(oneLine(r.Message)),
			orNone(r.Template), orNone(r.Chart), orNone(r.Source)})
	}
	return t
}

func chartTable(cs []charts.Chart, now time.Time) table {
	t := table{headers: []string{"NAME", "VERSION", "SIZE", "AGE", "DIGEST", "SOURCE"}, wide: 4}
	for _, c := range cs {
		t.rows = append(t.rows, []string{c.Name, c.Version, fmt.Sprint(c.Size), age(c.Added, now), c.Digest, c.Source})
	}
	return t
}

// oneLine keeps table cells on one line.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}
