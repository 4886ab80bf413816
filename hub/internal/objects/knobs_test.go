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

// TestKnobWarningsNameOnlyWhatIsNotActedOn: helmOptions and
// provider.config fields Tether acts on give no warning; the rest, and
// bad values, do, each by path.
func TestKnobWarningsNameOnlyWhatIsNotActedOn(t *testing.T) {
	var w warnings
	serviceSpecWarnings(&w, "spec.serviceSpec", &ServiceSpec{
		Provider: &ServiceProvider{Config: json.RawMessage(`{"syncMode":"DryRun","priority":"high","stopOnConflict":true,"driftIgnore":[{}],"interval":"5m"}`)},
		Services: []Service{
			{Name: "a", HelmOptions: json.RawMessage(`{"timeout":"1m","atomic":true,"wait":false,"skipCRDs":true,"disableHooks":true}`), HelmAction: HelmActionUninstall},
			{Name: "b", HelmOptions: json.RawMessage(`{"waitForJobs":true,"timeout":"1m"}`), HelmAction: "Upgrade"},
		},
	})
	want := []string{
		`spec.serviceSpec.provider.config.interval: no effect in Tether yet`,
		`spec.serviceSpec.provider.config.priority: "high" is not an integer in [1, 2147483646]; ignored`,
		`spec.serviceSpec.services[1].helmOptions: waitForJobs not applied yet (timeout, skipCRDs, disableHooks, atomic and wait are)`,
		`spec.serviceSpec.services[1].helmAction: "Upgrade" is neither Install nor Uninstall; the service is installed`,
	}
	if !slices.Equal(w, want) {
		t.Fatalf("warnings:\n%q\nwant:\n%q", []string(w), want)
	}
}
