package observe

import (
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestCompareObject(t *testing.T) {
	for _, tc := range []struct {
		name       string
		kind       string
		want, live string
		diffs      []string
	}{
		{
			name: "equal with server additions",
			want: "metadata: {name: a, labels: {app: a}}\nspec: {replicas: 2, template: {spec: {containers: [{name: c, image: i}]}}}",
			live: "metadata: {name: a, uid: u, resourceVersion: '9', labels: {app: a, extra: x}, annotations: {deployment.kubernetes.io/revision: '1'}}\n" +
				"spec: {replicas: 2, revisionHistoryLimit: 10, template: {spec: {containers: [{name: c, image: i, imagePullPolicy: IfNotPresent}]}}}\nstatus: {replicas: 0}",
		},
		{
			name:  "changed scalar",
			want:  "spec: {replicas: 2}",
			live:  "spec: {replicas: 5}",
			diffs: []string{"spec.replicas is 5, want 2"},
		},
		{
			name:  "missing field",
			want:  "spec: {paused: true, minReadySeconds: 3}",
			live:  "spec: {}",
			diffs: []string{"spec.minReadySeconds is unset, want 3", "spec.paused is unset, want true"},
		},
		{
			name: "zero values match absent, empty string matches anything",
			want: "spec: {hostNetwork: false, replicas: 0, selector: {}, tolerations: [], clusterIP: '', x: null}",
			live: "spec: {clusterIP: 10.0.0.1}",
		},
		{
			name: "quantities and numbers by value",
			want: "spec: {cpu: '0.5', mem: 1Gi, port: 8080, ratio: 1.5, target: 80}",
			live: "spec: {cpu: 500m, mem: '1073741824', port: 8080.0, ratio: 1.5, target: '80'}",
		},
		{
			name:  "list shorter and changed item",
			want:  "spec: {a: [1, 2], b: [{name: x, v: 1}]}",
			live:  "spec: {a: [1], b: [{name: x, v: 2}, {name: y}]}",
			diffs: []string{"spec.a has 1 items, want 2", "spec.b[0].v is 2, want 1"},
		},
		{
			name:  "metadata other than labels and annotations is ignored",
			want:  "metadata: {name: a, namespace: n, creationTimestamp: null, annotations: {k: v}}",
			live:  "metadata: {name: a, namespace: n, creationTimestamp: '2024-01-01T00:00:00Z', annotations: {k: w}}",
			diffs: []string{"metadata.annotations.k is w, want v"},
		},
		{
			name:  "type change",
			want:  "spec: {a: {b: 1}, c: [1]}",
			live:  "spec: {a: 3, c: x}",
			diffs: []string{"spec.a is 3, want an object", "spec.c is x, want a list"},
		},
		{
			name:  "secret stringData",
			kind:  "Secret",
			want:  "stringData: {a: hello, b: x, c: y}",
			live:  "data: {a: aGVsbG8=, b: eQ==}",
			diffs: []string{"data.b differs from stringData", "data.c is unset, want a value"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want, live map[string]any
			if err := yaml.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal([]byte(tc.live), &live); err != nil {
				t.Fatal(err)
			}
			kind := tc.kind
			if kind == "" {
				kind = "Deployment"
			}
			var diffs []string
			compareObject(kind, want, live, &diffs)
			if !slices.Equal(diffs, tc.diffs) {
				t.Errorf("diffs = %q, want %q", diffs, tc.diffs)
			}
		})
	}
}
