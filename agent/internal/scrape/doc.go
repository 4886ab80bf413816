// Package scrape runs the scrape configs of the agent's desired state: it
// finds the targets in the local kube-apiserver, scrapes their Prometheus
// endpoints at each config's interval, and hands the samples, as
// telemetryv1.MetricBatch, to the telemetry sink (the outbox kind
// "metrics").
//
// # Targets
//
// A config's targets are pods (status.podIP and a container port, by name
// or number) or services (the addresses of their EndpointSlices and the
// slice port of the service port), selected by namespaces and a label
// selector, listed with the dynamic client every Config.DiscoveryInterval
// and whenever the configs change. A target starts with Prometheus'
// labels: __address__, __scheme__, __metrics_path__, job
// ("<namespace>/<name>" of the ScrapeConfig), namespace, pod, container,
// service, and the __meta_kubernetes_* labels of Prometheus' kubernetes
// SD (pod and service labels, node name, port name). relabel_configs run
// on them; a target they drop is not scraped. Then instance defaults to
// __address__, every "__" label goes, and cluster is set to the agent's
// cluster. At most Config.MaxTargetsPerConfig targets per config.
//
// # One scrape
//
// GET scheme://address/path with the Accept header Prometheus sends, cut
// by the config's timeout; a body over Config.MaxBodyBytes fails the
// scrape. The text format and OpenMetrics are parsed with Prometheus'
// textparse. Each series gets the target's labels as with
// honor_labels: false (a scraped label a target label also has is kept
// as exported_<name>, so a scraped cluster becomes exported_cluster), then
// metric_relabel_configs, then cluster again (relabelling cannot move a
// series to another cluster). A series whose metric or label names are not
// legal on the wire (telemetryv1.ValidMetricName, ValidLabelName), or that
// has too many labels or too long a value, is dropped and counted
// (scrape_samples_invalid). More samples than the sample limit fail the
// scrape and keep none. Like Prometheus, every scrape adds up,
// scrape_duration_seconds, scrape_samples_scraped and
// scrape_samples_post_metric_relabeling, with the target's labels.
//
// # Batches
//
// Scrapes buffer their series; every Config.FlushInterval (or when
// Config.MaxBatchSeries are buffered) the buffer goes out as batches of at
// most MaxBatchSeries series, each with the health of every target
// (the hub keeps the last list it got), and the metadata of families not
// sent before. Targets returns the same health for `tether-agent status`.
// A batch the sink refuses is dropped and counted (Stats).
//
// # Staleness
//
// Each target's loop tracks the series of its last successful scrape
// (agent/internal/staleness; those with a timestamp in the exposition
// are not tracked). A series a scrape no longer has gets a staleness
// marker (a StaleNaN sample) at that scrape's time; a failed scrape marks
// all but up and scrape_*; a target sync removes marks all its series,
// unless a loop of the same target under a changed config takes its
// tracker over. Stopping the scraper marks nothing.
package scrape
