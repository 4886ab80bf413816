package cli

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeRefusesBadExternalLabel: a bad --external-label stops `tether
// serve` before it opens anything, naming the flag and the value.
func TestServeRefusesBadExternalLabel(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no equals":    {[]string{"region"}, `--external-label "region": want NAME=VALUE`},
		"cluster":      {[]string{"cluster=hub-eu"}, `--external-label "cluster=hub-eu": label name "cluster": it is the per-cluster label`},
		"reserved":     {[]string{"__region=eu"}, `--external-label "__region=eu": label name "__region": names starting with __ are reserved`},
		"bad name":     {[]string{"1region=eu"}, `--external-label "1region=eu": label name "1region": want`},
		"dash in name": {[]string{"hub-name=eu"}, `--external-label "hub-name=eu": label name "hub-name"`},
		"empty value":  {[]string{"region="}, `--external-label "region=": label region: the value is empty`},
		"bad utf-8":    {[]string{"region=\xff"}, "the value is not valid UTF-8"},
		"given twice":  {[]string{"region=eu", "region=us"}, `--external-label "region=us": label region given twice`},
		"empty name":   {[]string{"=eu"}, `--external-label "=eu": label name ""`},
	} {
		t.Run(name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			args := []string{"serve", "--data-dir", data, "--agent-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"}
			for _, a := range tc.args {
				args = append(args, "--external-label", a)
			}
			code, _, errs := run(t, "", args...)
			if code == 0 || !strings.Contains(errs, tc.want) {
				t.Errorf("serve %v: exit %d, stderr %q; want an error with %q", tc.args, code, errs, tc.want)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("data dir created by a refused start: %v", err)
			}
		})
	}
	if help := mustRun(t, "", "serve", "--help"); !strings.Contains(help, "--external-label") {
		t.Errorf("serve --help does not list --external-label")
	}
}

func TestParseExternalLabels(t *testing.T) {
	got, err := parseExternalLabels([]string{"region=eu", "hub=eu-1", "note=a=b c"})
	if want := map[string]string{"region": "eu", "hub": "eu-1", "note": "a=b c"}; err != nil || !maps.Equal(got, want) {
		t.Errorf("parseExternalLabels = %v, %v; want %v", got, err, want)
	}
	if got, err := parseExternalLabels(nil); err != nil || got != nil {
		t.Errorf("parseExternalLabels(nil) = %v, %v; want nil", got, err)
	}
}
