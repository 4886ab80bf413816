package cli

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/objects"
)

// kind is what `get`, `describe` and `delete` accept.
type kind struct {
	// name is the API kind for stored objects; "" for the special views.
	name    string
	aliases []string
	special string // "clusters", "services", "charts"
}

var kinds = []kind{
	{special: "clusters", aliases: []string{"clusters", "cluster", "cl"}},
	{special: "services", aliases: []string{"services", "service", "svc"}},
	{special: "charts", aliases: []string{"charts", "chart"}},
	{name: objects.KindHelmRepository, aliases: []string{"helmrepositories", "helmrepository", "helmrepo", "hr"}},
	{name: objects.KindServiceTemplate, aliases: []string{"servicetemplates", "servicetemplate", "st"}},
	{name: objects.KindClusterDeployment, aliases: []string{"clusterdeployments", "clusterdeployment", "cd"}},
	{name: objects.KindMultiClusterService, aliases: []string{"multiclusterservices", "multiclusterservice", "mcs"}},
	{name: objects.KindConfigMap, aliases: []string{"configmaps", "configmap", "cm"}},
	{name: objects.KindSecret, aliases: []string{"secrets", "secret"}},
}

func lookupKind(s string) (kind, error) {
	ls := strings.ToLower(s)
	for _, k := range kinds {
		if slices.Contains(k.aliases, ls) || strings.ToLower(k.name) == ls {
			return k, nil
		}
	}
	var names []string
	for _, k := range kinds {
		names = append(names, k.aliases[0])
	}
	return kind{}, usageError{fmt.Errorf("unknown kind %q; known kinds: %s", s, strings.Join(names, ", "))}
}

// decodeObjects turns API JSON into typed objects.
func decodeObjects(kindName string, raws []json.RawMessage) ([]objects.Object, error) {
	out := make([]objects.Object, 0, len(raws))
	for _, r := range raws {
		o := objects.New(kindName)
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

func objectTable(kindName string, objs []objects.Object, now time.Time) table {
	t := table{}
	switch kindName {
	case objects.KindServiceTemplate:
		t.headers = []string{"NAMESPACE", "NAME", "CHART", "VERSION", "VALID", "AGE", "DIGEST", "MESSAGE"}
		t.wide = 6
	case objects.KindClusterDeployment:
		t.headers = []string{"NAMESPACE", "NAME", "TEMPLATE", "SERVICES", "READY", "AGE", "MESSAGE"}
		t.wide = 6
	case objects.KindMultiClusterService:
		t.headers = []string{"NAMESPACE", "NAME", "SELECTOR", "SERVICES", "READY", "AGE", "MESSAGE"}
		t.wide = 6
	case objects.KindHelmRepository:
		t.headers = []string{"NAMESPACE", "NAME", "URL", "AGE"}
	default:
		t.headers = []string{"NAMESPACE", "NAME", "DATA", "AGE"}
	}
	for _, o := range objs {
		md := o.GetHeader().Metadata
		ag := "<unknown>"
		if md.CreationTimestamp != nil {
			ag = age(*md.CreationTimestamp, now)
		}
		row := []string{md.Namespace, md.Name}
		switch x := o.(type) {
		case *objects.ServiceTemplate:
			cs := x.Spec.Helm.ChartSpec
			ok, msg := x.Ready()
			row = append(row, cs.Chart, cs.Version, fmt.Sprint(ok), ag, orNone(x.Status.ChartDigest), orNone(msg))
		case *objects.ClusterDeployment:
			r, tot, msg := readiness(x.Status)
			row = append(row, x.Spec.Template, fmt.Sprint(len(x.Spec.ServiceSpec.Services)), fmt.Sprintf("%d/%d", r, tot), ag, orNone(msg))
		case *objects.MultiClusterService:
			r, tot, msg := readiness(x.Status)
			row = append(row, orNone(selectorString(x.Spec.ClusterSelector)), fmt.Sprint(len(x.Spec.ServiceSpec.Services)), fmt.Sprintf("%d/%d", r, tot), ag, orNone(msg))
		case *objects.HelmRepository:
			row = append(row, x.Spec.URL, ag)
		case *objects.ConfigMap:
			row = append(row, fmt.Sprint(len(x.Data)), ag)
		case *objects.Secret:
			row = append(row, fmt.Sprint(len(x.Data)+len(x.StringData)), ag)
		}
		t.rows = append(t.rows, row)
	}
	return t
}

func readiness(st objects.ServicesStatus) (ready, total int, msg string) {
	for _, s := range st.Services {
		total++
		if s.State == "Deployed" {
			ready++
		}
	}
	for _, c := range st.Conditions {
		if c.Type == "Ready" && c.Status != "True" {
			msg = c.Message
		}
	}
	return ready, total, msg
}

func selectorString(sel objects.LabelSelector) string {
	var parts []string
	keys := make([]string, 0, len(sel.MatchLabels))
	for k := range sel.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, k+"="+sel.MatchLabels[k])
	}
	for _, e := range sel.MatchExpressions {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", e.Key, e.Operator, strings.Join(e.Values, ",")))
	}
	return strings.Join(parts, ",")
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
