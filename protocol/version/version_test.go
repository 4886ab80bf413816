package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestGetAndRead(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	for _, v := range []string{"dev", "v1.2.3"} {
		t.Run(v, func(t *testing.T) {
			Version = v
			if got := Get(); got != v {
				t.Fatalf("Get() = %q, want %q", got, v)
			}
			info := Read()
			if info.Version != v {
				t.Errorf("Read().Version = %q, want %q", info.Version, v)
			}
			if info.GoVersion != runtime.Version() {
				t.Errorf("Read().GoVersion = %q, want %q", info.GoVersion, runtime.Version())
			}
			if s := info.String(); !strings.HasPrefix(s, v+" (") {
				t.Errorf("Info.String() = %q, want prefix %q", s, v+" (")
			}
		})
	}
}
