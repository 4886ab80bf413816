package server

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestNewRefusesBadExternalLabels: a library caller's bad
// Config.ExternalLabels stop New before it creates the data dir.
func TestNewRefusesBadExternalLabels(t *testing.T) {
	for name, tc := range map[string]struct {
		labels map[string]string
		want   string
	}{
		"cluster":  {map[string]string{"region": "eu", "cluster": "x"}, `label name "cluster"`},
		"reserved": {map[string]string{"__x": "y"}, "reserved"},
		"empty":    {map[string]string{"region": ""}, "empty"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.DataDir = filepath.Join(t.TempDir(), "data")
			cfg.ExternalLabels = tc.labels
			_, err := New(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
	if err := checkExternalLabels(map[string]string{"region": "eu", "hub": "eu-1"}); err != nil {
		t.Errorf("good labels refused: %v", err)
	}
}
