package provision

import (
	"fmt"
	"github.com/go-logr/logr"
	"log/slog"
	"path/filepath"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ManagementClient returns a client for the management cluster of a
// kubeconfig, read with kubectl's rules: path may list several files
// (joined with the OS path list separator) and the current context is
// used. The client knows the core and Cluster API v1beta2 types; other
// kinds go through unstructured objects.
func ManagementClient(path string, log *slog.Logger) (client.Client, error) {
	// controller-runtime's client logs through its one global logger and
	// complains on stderr when it is unset.
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = ""
	rules.Precedence = splitList(path)
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("management kubeconfig %s: %w", path, err)
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := clusterv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("management cluster from %s: %w", path, err)
	}
	return c, nil
}

func splitList(p string) []string {
	return filepath.SplitList(p)
}
