// Package agent holds the Tether agent's Helm chart, embedded so the hub
// can install it into clusters it provisions. The same folder is the
// chart a user installs with `helm install`.
package agent

import "embed"

// Files are the chart's files, paths relative to the chart root.
//
//go:embed Chart.yaml values.yaml values.schema.json templates
var Files embed.FS
