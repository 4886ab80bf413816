//go:build tools

// Package tools pins the Prometheus server (its remote-write receiver is the
// onward store of the telemetry tests) and promtool (which queries the hub
// as a Prometheus data source); e2e/tools/build.sh builds both from this
// module.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
