package objects

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

func TestHelmOptionsLayerAndRefuseBadTimeout(t *testing.T) {
	o, ignored, err := ParseHelmOptions(json.RawMessage(`{"timeout":"1m","atomic":true,"labels":{"a":"b"}}`),
		json.RawMessage(`{"timeout":"90s","skipCRDs":true,"disableHooks":true,"wait":false}`))
	if err != nil {
		t.Fatal(err)
	}
	want := HelmOptions{Timeout: 90 * time.Second, SkipCRDs: true, DisableHooks: true, Atomic: true, NoWait: true}
	if o != want || !slices.Equal(ignored, []string{"labels"}) {
		t.Fatalf("got %+v %v, want %+v [labels]", o, ignored, want)
	}
	for _, bad := range []string{`{"timeout":"soon"}`, `{"timeout":"-1s"}`, `{"timeout":5}`, `{"atomic":"yes"}`} {
		if _, _, err := ParseHelmOptions(json.RawMessage(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestSyncModeFromProviderConfigWins(t *testing.T) {
	ss := &ServiceSpec{SyncMode: SyncContinuous, Provider: &ServiceProvider{Config: json.RawMessage(`{"syncMode":"OneTime"}`)}}
	if m, err := SyncModeOf(ss); err != nil || m != SyncOneTime {
		t.Fatalf("got %q, %v", m, err)
	}
	ss.Provider.Config = json.RawMessage(`{"syncMode":"Sometimes"}`)
	if _, err := SyncModeOf(ss); err == nil {
		t.Fatal("Sometimes accepted")
	}
}
