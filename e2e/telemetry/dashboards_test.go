package telemetry

import (
	"encoding/json"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/deploy/grafana"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

// grafanaVars are the substitutions Grafana would make for a dashboard
// looking at the test cluster over the last hour.
var grafanaVars = grafana.Vars{Cluster: clusterName, RateInterval: "1m", Interval: "15s", Range: "1h"}

var labelValuesRE = regexp.MustCompile(`^label_values\((?:(.+),\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// grafanaDashboards runs every panel query and templating variable query
// of deploy/grafana/dashboards/*.json against the hub, as Grafana would
// with the test cluster selected, and checks each returns data.
func grafanaDashboards(t *testing.T, api *hubAPI) {
	dashboards, err := grafana.Load(filepath.Join(e2etest.RepoRoot(t), "deploy", "grafana", "dashboards"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dashboards {
		t.Run(d.File, func(t *testing.T) {
			for _, v := range d.Variables {
				m := labelValuesRE.FindStringSubmatch(v.Query)
				if m == nil {
					t.Errorf("variable %s: query %q: not label_values(...)", v.Name, v.Query)
					continue
				}
				form := url.Values{}
				if m[1] != "" {
					form.Set("match[]", grafanaVars.Replace(m[1]))
				}
				var values []string
				if err := json.Unmarshal(api.get(t, "/api/v1/label/"+m[2]+"/values", form), &values); err != nil {
					t.Fatalf("variable %s: %v", v.Name, err)
				}
				found := false
				for _, s := range values {
					found = found || s == clusterName
				}
				if v.Name == "cluster" && !found || len(values) == 0 {
					t.Errorf("variable %s (%s): values %v; want the test cluster %s among them", v.Name, v.Query, values, clusterName)
				}
			}
			n, empty := 0, 0
			for _, q := range d.Queries {
				n++
				expr := grafanaVars.Replace(q.Expr)
				if strings.Contains(expr, "$") {
					t.Errorf("panel %q: %s: a variable the test does not substitute", q.Panel, q.Expr)
					continue
				}
				// As Grafana asks: a range query over the last hour at
				// $__interval, or an instant query.
				var res []e2etest.PromSeries
				if q.Instant {
					res = api.query(t, expr)
				} else {
					res = api.queryRange(t, expr, time.Hour, 15*time.Second)
				}
				if len(res) == 0 {
					empty++
					t.Errorf("panel %q: %s: no data", q.Panel, expr)
				}
			}
			if n == 0 {
				t.Errorf("%s: no panel queries", d.Title)
			}
			t.Logf("%s: %d of %d panel queries returned data", d.Title, n-empty, n)
		})
	}
}
