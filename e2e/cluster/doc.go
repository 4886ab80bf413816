// Package cluster starts real, isolated Kubernetes clusters for tests and
// demos: etcd and kube-apiserver built from upstream source (make e2e-bins),
// optionally kube-controller-manager, kube-scheduler and kwok with simulated
// nodes, and optionally the Cluster API managers (core, kubeadm bootstrap,
// kubeadm control plane and CAPD with its in-memory backend), so a cluster
// can serve as a management cluster.
//
// # Shape
//
// [Launch] is the core: it needs no testing.T and returns a [Cluster] whose
// [Cluster.Stop] tears everything down. [Start] wraps it for tests: it fails
// the test on error, registers Stop with t.Cleanup and prints the tail of
// every component's log when the test failed.
//
// # Isolation
//
// Every component binds to 127.0.0.1 on ports picked free at start (retried
// on a conflict), keeps its data and log under the cluster's own folder, and
// runs in its own process group, which Stop signals as a whole. The children
// also get SIGKILL if the launching thread dies (Pdeathsig), so a test
// binary killed by a timeout leaves nothing behind. Several clusters can run
// at once in one process.
//
// # Binaries
//
// Binaries are looked up in $TETHER_E2E_BIN_DIR, else in e2e/.bin of the
// repository holding the working directory. When one is missing, Launch
// fails with a message that says to run `make e2e-bins`.
package cluster
