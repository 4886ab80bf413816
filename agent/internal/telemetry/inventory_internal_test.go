package telemetry

import (
	"encoding/json"
	"testing"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// FuzzInventoryObjects: whatever objects the API server returns (their
// labels, annotations and names are written by tenants), decoding never
// panics and the series made of them form a batch the hub accepts: a
// refused batch would lose the whole collection.
func FuzzInventoryObjects(f *testing.F) {
	f.Add(`{"metadata":{"name":"web-1","namespace":"apps","uid":"u","labels":{"app.kubernetes.io/instance":"web"},"ownerReferences":[{"kind":"ReplicaSet","name":"web-5d","controller":true}]},"spec":{"nodeName":"n1","containers":[{"name":"app","resources":{"requests":{"cpu":"250m","memory":"128Mi","nvidia.com/gpu":"1"},"limits":{"hugepages-2Mi":"1Gi"}}}]},"status":{"phase":"Running","startTime":"2026-12-02T00:00:00Z","containerStatuses":[{"name":"app","restartCount":3,"state":{"terminated":{"finishedAt":"2026-12-02T01:00:00Z"}}}]}}`)
	f.Add(`{"metadata":{"name":"n1","labels":{"karpenter.sh/capacity-type":"spot","node.kubernetes.io/instance-type":"\u00ff\ud800"},"annotations":{"meta.helm.sh/release-name":""}},"spec":{"providerID":"aws:///x"},"status":{"capacity":{"cpu":"4","memory":"16Gi","pods":"110","ephemeral-storage":"100Gi"},"addresses":[{"type":"InternalIP","address":"10.0.0.1"}],"phase":"Active"}}`)
	f.Add(`{"metadata":{"name":"data","namespace":"apps"},"spec":{"storageClassName":"","volumeMode":"Filesystem","resources":{"requests":{"storage":"5Gi"}}},"status":{"phase":"Bound"}}`)
	f.Fuzz(func(t *testing.T, obj string) {
		var got []*telemetryv1.MetricBatch
		c := newCollection(1, 1000, func(b *telemetryv1.MetricBatch) error { got = append(got, b); return nil })
		var p pod
		if json.Unmarshal([]byte(obj), &p) == nil {
			c.podSeries(&p)
		}
		var n node
		if json.Unmarshal([]byte(obj), &n) == nil {
			c.nodeSeries(&n)
		}
		var ns namespace
		if json.Unmarshal([]byte(obj), &ns) == nil {
			c.namespaceSeries(&ns)
		}
		var v pvc
		if json.Unmarshal([]byte(obj), &v) == nil {
			c.pvcSeries(&v)
		}
		c.flush()
		for _, b := range got {
			for _, s := range b.Series {
				labelCluster(s, "edge-1")
			}
			if err := telemetryv1.Validate(b); err != nil {
				t.Fatalf("objects %s make an invalid batch: %v", obj, err)
			}
		}
	})
}
