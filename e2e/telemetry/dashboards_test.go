package telemetry

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/e2etest"
)

// dashboard is the part of a Grafana dashboard JSON the test reads.
type dashboard struct {
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr    string `json:"expr"`
		Instant bool   `json:"instant"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func (p panel) walk(f func(panel)) {
	f(p)
	for _, c := range p.Panels {
		c.walk(f)
	}
}

// grafanaVars are the substitutions Grafana would make for a dashboard
// looking at the test cluster over the last hour.
var grafanaVars = strings.NewReplacer(
	"${cluster}", clusterName, "$cluster", clusterName,
	"${__rate_interval}", "1m", "$__rate_interval", "1m",
	"${__interval}", "15s", "$__interval", "15s",
	"${__range}", "1h", "$__range", "1h",
)

var labelValuesRE = regexp.MustCompile(`^label_values\((?:(.+),\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// grafanaDashboards runs every panel query and templating variable query
// of deploy/grafana/dashboards/*.json against the hub, as Grafana would
// with the test cluster selected, and checks each returns data.
func grafanaDashboards(t *testing.T, api *hubAPI) {
	files, err := filepath.Glob(filepath.Join(e2etest.RepoRoot(t), "deploy", "grafana", "dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			for _, v := range d.Templating.List {
				if v.Type != "query" {
					continue
				}
				q := v.Query
				if m, ok := q.(map[string]any); ok {
					q = m["query"]
				}
				qs, _ := q.(string)
				m := labelValuesRE.FindStringSubmatch(strings.TrimSpace(qs))
				if m == nil {
					t.Errorf("variable %s: query %q: not label_values(...)", v.Name, qs)
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
					t.Errorf("variable %s (%s): values %v; want the test cluster %s among them", v.Name, qs, values, clusterName)
				}
			}
			n, empty := 0, 0
			for _, p := range d.Panels {
				p.walk(func(p panel) {
					for _, tg := range p.Targets {
						if tg.Expr == "" {
							continue
						}
						n++
						expr := grafanaVars.Replace(tg.Expr)
						if strings.Contains(expr, "$") {
							t.Errorf("panel %q: %s: a variable the test does not substitute", p.Title, tg.Expr)
							continue
						}
						// As Grafana asks: a range query over the last hour
						// at $__interval, or an instant query.
						var res []e2etest.PromSeries
						if tg.Instant {
							res = api.query(t, expr)
						} else {
							res = api.queryRange(t, expr, time.Hour, 15*time.Second)
						}
						if len(res) == 0 {
							empty++
							t.Errorf("panel %q: %s: no data", p.Title, expr)
						}
					}
				})
			}
			if n == 0 {
				t.Errorf("%s: no panel queries", d.Title)
			}
			t.Logf("%s: %d of %d panel queries returned data", d.Title, n-empty, n)
		})
	}
}
