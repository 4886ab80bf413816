package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// BinDirEnv names the environment variable that points at the folder
// `make e2e-bins` filled.
const BinDirEnv = "TETHER_E2E_BIN_DIR"

// mainModule is the module path whose root holds e2e/.bin.
const mainModule = "github.com/tetherfleet/tether"

// ErrBinariesMissing is returned when a component binary or asset is absent.
var ErrBinariesMissing = errors.New("e2e binaries missing: run `make e2e-bins` (or set " + BinDirEnv + ")")

// Binary and asset names inside the bin folder, as e2e/tools/build.sh
// writes them.
const (
	binEtcd              = "etcd"
	binAPIServer         = "kube-apiserver"
	binControllerManager = "kube-controller-manager"
	binScheduler         = "kube-scheduler"
	binKwok              = "kwok"
	binCAPI              = "capi-manager"
	binKubeadmBootstrap  = "kubeadm-bootstrap-manager"
	binKubeadmCP         = "kubeadm-control-plane-manager"
	binCAPD              = "capd-manager"
	assetKwokStages      = "kwok-stages/stages.yaml"
	assetCAPIManifests   = "capi-manifests"
)

// BinDir returns the folder holding the e2e binaries: explicit if set, else
// $TETHER_E2E_BIN_DIR, else e2e/.bin in the repository that holds the
// working directory.
func BinDir(explicit string) (string, error) {
	if explicit != "" {
		return filepath.Abs(explicit)
	}
	if d := os.Getenv(BinDirEnv); d != "" {
		return filepath.Abs(d)
	}
	root, err := repoRoot()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBinariesMissing, err)
	}
	return filepath.Join(root, "e2e", ".bin"), nil
}

// repoRoot walks up from the working directory to the go.mod of the main
// module.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for dir := wd; ; {
		if isMainModule(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find repository root: no go.mod of %s above %s", mainModule, wd)
		}
		dir = parent
	}
}

func isMainModule(goMod string) bool {
	f, err := os.Open(goMod)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if rest, ok := strings.CutPrefix(line, "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`) == mainModule
		}
	}
	return false
}

// requireFiles checks that every name exists under dir, and reports all
// missing ones at once.
func requireFiles(dir string, names ...string) error {
	var missing []string
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s not found in %s", ErrBinariesMissing, strings.Join(missing, ", "), dir)
	}
	return nil
}
