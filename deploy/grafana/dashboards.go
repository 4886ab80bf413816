// Package grafana reads the shipped Grafana dashboards (dashboards/*.json)
// as data: every panel query and templating variable query, and the
// substitutions Grafana makes before it sends them. The tests and
// benchmarks that run the dashboards against a hub share it.
package grafana

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Dashboard is what a dashboard asks of its data source.
type Dashboard struct {
	// File is the dashboard's file name (tether-fleet.json, ...).
	File  string
	Title string
	// Queries are the panel targets with an expression, collapsed rows'
	// panels included.
	Queries []Query
	// Variables are the templating variables of type query.
	Variables []Variable
}

// Query is one panel target.
type Query struct {
	Panel, Expr string
	// Instant: an instant query; else a range query over the dashboard's
	// time range.
	Instant bool
}

// Variable is one templating variable query (label_values(...)).
type Variable struct{ Name, Query string }

type panelJSON struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr    string `json:"expr"`
		Instant bool   `json:"instant"`
	} `json:"targets"`
	Panels []panelJSON `json:"panels"` // a collapsed row's
}

func (p panelJSON) walk(f func(panelJSON)) {
	f(p)
	for _, c := range p.Panels {
		c.walk(f)
	}
}

// Load reads every dashboard in dir (*.json); none is an error.
func Load(dir string) ([]Dashboard, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("grafana: no dashboards in %s", dir)
	}
	var out []Dashboard
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var d struct {
			Title      string      `json:"title"`
			Panels     []panelJSON `json:"panels"`
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("grafana: %s: %w", f, err)
		}
		db := Dashboard{File: filepath.Base(f), Title: d.Title}
		for _, p := range d.Panels {
			p.walk(func(p panelJSON) {
				for _, t := range p.Targets {
					if t.Expr != "" {
						db.Queries = append(db.Queries, Query{Panel: p.Title, Expr: t.Expr, Instant: t.Instant})
					}
				}
			})
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			q := v.Query // a string, or {query: string, refId}
			if m, ok := q.(map[string]any); ok {
				q = m["query"]
			}
			qs, _ := q.(string)
			db.Variables = append(db.Variables, Variable{Name: v.Name, Query: strings.TrimSpace(qs)})
		}
		out = append(out, db)
	}
	return out, nil
}

// Vars are the values Grafana substitutes for one view of a dashboard.
type Vars struct {
	Cluster, RateInterval, Interval, Range string
}

// Replace substitutes v in expr, in both the $name and ${name} forms.
func (v Vars) Replace(expr string) string {
	return strings.NewReplacer(
		"${cluster}", v.Cluster, "$cluster", v.Cluster,
		"${__rate_interval}", v.RateInterval, "$__rate_interval", v.RateInterval,
		"${__interval}", v.Interval, "$__interval", v.Interval,
		"${__range}", v.Range, "$__range", v.Range,
	).Replace(expr)
}
