package observe

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// LoadRESTConfig finds the cluster the way kubectl does: the kubeconfig at
// kubeconfigPath if given, else $KUBECONFIG (a list of files, merged), else
// the in-cluster service account, else ~/.kube/config.
func LoadRESTConfig(kubeconfigPath string) (*rest.Config, error) {
	if kubeconfigPath != "" {
		c, err := clientcmd.BuildConfigFromFlags("", kubeconfigPath)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfigPath, err)
		}
		return c, nil
	}
	if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		rules := &clientcmd.ClientConfigLoadingRules{Precedence: filepath.SplitList(env)}
		c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig from $%s=%s: %w", clientcmd.RecommendedConfigPathEnvVar, env, err)
		}
		return c, nil
	}
	c, err := rest.InClusterConfig()
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, rest.ErrNotInCluster) {
		return nil, fmt.Errorf("load in-cluster config: %w", err)
	}
	home := clientcmd.RecommendedHomeFile
	if _, statErr := os.Stat(home); statErr != nil {
		return nil, fmt.Errorf("no cluster configuration: no kubeconfig path given, $%s unset, not in a cluster, and %s: %w",
			clientcmd.RecommendedConfigPathEnvVar, home, statErr)
	}
	c, err = clientcmd.BuildConfigFromFlags("", home)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", home, err)
	}
	return c, nil
}
