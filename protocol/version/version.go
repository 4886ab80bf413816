// Package version reports the version of the running Tether binary.
//
// Release builds set it with
//
//	go build -ldflags "-X github.com/tetherfleet/tether/protocol/version.Version=v1.2.3"
//
// Agents send it in Hello and EnrollRequest; the hub reports it in Welcome
// logs and the console.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is the release version, set by the linker. "dev" when unset.
var Version = "dev"

// Get returns Version.
func Get() string { return Version }

// Info describes the build.
type Info struct {
	// Version is Version as set by the linker.
	Version string `json:"version"`
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string `json:"goVersion"`
	// Commit is the VCS revision recorded by the Go toolchain, with a
	// "-dirty" suffix for a modified tree; empty when the build had no VCS
	// information (for example with -buildvcs=false).
	Commit string `json:"commit,omitempty"`
}

// Read returns build information for the running binary.
func Read() Info {
	info := Info{Version: Version, GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if info.Commit != "" && dirty {
		info.Commit += "-dirty"
	}
	return info
}

// String formats the build as "VERSION (COMMIT, GOVERSION)".
func (i Info) String() string {
	if i.Commit == "" {
		return i.Version + " (" + i.GoVersion + ")"
	}
	return i.Version + " (" + i.Commit + ", " + i.GoVersion + ")"
}
