package objects

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
)

// TestDriftRulesOf: k0rdent's driftIgnore and driftExclusions are read
// from provider.config and from the serviceSpec (both apply), in Sveltos'
// shapes; bad entries are refused by path and warned about.
func TestDriftRulesOf(t *testing.T) {
	ss := &ServiceSpec{
		Provider:    &ServiceProvider{Config: json.RawMessage(`{"driftExclusions":[{"paths":["/spec/replicas"],"target":{"group":"apps","version":"v1","kind":"Deployment","name":"web","namespace":"shop"}}]}`)},
		DriftIgnore: json.RawMessage(`[{"kind":"ConfigMap","labelSelector":"app=web","annotationSelector":"x=y"}]`),
	}
	r, err := DriftRulesOf(ss)
	if err != nil {
		t.Fatal(err)
	}
	want := DriftRules{
		Ignore:  []DriftSelector{{Kind: "ConfigMap", LabelSelector: "app=web", AnnotationSelector: "x=y"}},
		Exclude: []DriftExclusion{{Paths: []string{"/spec/replicas"}, Target: &DriftSelector{Group: "apps", Version: "v1", Kind: "Deployment", Name: "web", Namespace: "shop"}}},
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	var w warnings
	serviceSpecWarnings(&w, "spec.serviceSpec", ss)
	if len(w) != 0 {
		t.Errorf("warnings for good drift rules: %q", []string(w))
	}

	for _, tc := range []struct {
		ss   ServiceSpec
		warn string
	}{
		{ServiceSpec{DriftExclusions: json.RawMessage(`[{"paths":[]}]`)},
			"spec.serviceSpec.driftExclusions[0].paths: empty; the services are not deployed"},
		{ServiceSpec{DriftExclusions: json.RawMessage(`[{"paths":["/spec//x"]}]`)},
			`spec.serviceSpec.driftExclusions[0].paths[0]: "/spec//x": empty segment (want a JSON 6902 path such as /spec/replicas); the services are not deployed`},
		{ServiceSpec{DriftExclusions: json.RawMessage(`[{"paths":["/metadata/name"]}]`)},
			`spec.serviceSpec.driftExclusions[0].paths[0]: "/metadata/name" names the object's identity; the services are not deployed`},
		{ServiceSpec{Provider: &ServiceProvider{Config: json.RawMessage(`{"driftIgnore":[{"name":"("}]}`)}},
			"spec.serviceSpec.provider.config.driftIgnore[0]: name \"(\" is not a regular expression: error parsing regexp: missing closing ): `^(?:()$`; the services are not deployed"},
		{ServiceSpec{DriftIgnore: json.RawMessage(`{"kind":"X"}`)},
			"spec.serviceSpec.driftIgnore: not a list of selectors: json: cannot unmarshal object into Go value of type []objects.DriftSelector; the services are not deployed"},
	} {
		if _, err := DriftRulesOf(&tc.ss); err == nil {
			t.Errorf("%s: accepted", tc.warn)
		}
		var w warnings
		serviceSpecWarnings(&w, "spec.serviceSpec", &tc.ss)
		if !slices.Equal(w, []string{tc.warn}) {
			t.Errorf("warnings %q\nwant %q", []string(w), tc.warn)
		}
	}
}
