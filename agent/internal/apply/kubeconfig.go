package apply

import (
	"k8s.io/client-go/rest"

	"github.com/tetherfleet/tether/agent/internal/observe"
)

// LoadRESTConfig finds the cluster the way kubectl does; see
// observe.LoadRESTConfig, which the agent uses without linking Helm.
func LoadRESTConfig(kubeconfigPath string) (*rest.Config, error) {
	return observe.LoadRESTConfig(kubeconfigPath)
}
