// Package telemetry collects the agent's own metrics of its cluster and
// ships them, with every other producer's, through the outbox to the hub.
//
// # Shipping
//
// [Shipper.Emit] is the one way a metric batch leaves the agent: it sets
// cluster="<name>" on every series, cuts the batch under the
// telemetryv1 limits, encodes it (telemetryv1.Encode: protobuf, gzip) and
// enqueues it as outbox kind "metrics", whose byte quota evicts the oldest
// batches first (counted as dropped). The scrape loops call it too.
//
// # Collecting
//
// [Collector] runs one collection every interval: inventory from the
// kube-apiserver, exported under kube-state-metrics' series names and
// labels (nodes, pods and containers, namespaces, PVCs), and CPU and
// memory usage from metrics.k8s.io where it is served, else from each
// kubelet's resource metrics through the API server's node proxy. Lists
// are paged and decoded into small structs of the fields used, so memory
// is bounded by a page, not by the cluster; series are shipped as soon as
// a batch is full.
//
// Label values from objects (node and pod labels, the Helm release) are
// data a tenant may write: they become label values only, bounded in
// length and made valid UTF-8, and are never interpreted.
package telemetry
