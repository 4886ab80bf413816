package provision

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentchart "github.com/tetherfleet/tether/bundles/agent"
	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/objects"
)

// Agent states in ClusterDeployment.status.agent.
const (
	AgentInstalled = "Installed"
	AgentEnrolled  = "Enrolled"
)

// Agent installation defaults.
const (
	// AgentNamespace is where the agent chart goes in a new cluster.
	AgentNamespace = "tether-system"
	// agentTokenSecret is the chart's token Secret; its presence in the
	// new cluster means a token was issued and installed.
	agentTokenSecret = "tether-agent-token"
	agentTokenTTL    = 24 * time.Hour
)

// Fleet is the part of the fleet registry the controller uses.
type Fleet interface {
	Get(ctx context.Context, name string) (fleet.Cluster, error)
	CreateToken(ctx context.Context, req fleet.TokenRequest) (fleet.TokenInfo, error)
	Delete(ctx context.Context, name string) error
}

// installAgent brings the agent into a Ready cluster: it reads the
// cluster's kubeconfig secret from the management cluster, issues a join
// token once (the token Secret in the new cluster is the record), and
// creates the agent chart's objects there. It returns the agent state.
func (c *Controller) installAgent(ctx context.Context, cd *objects.ClusterDeployment, clusterName string) (string, error) {
	name := cd.Metadata.Name
	fc, err := c.cfg.Fleet.Get(ctx, name)
	if err == nil && !fc.Enrolled.IsZero() {
		return AgentEnrolled, nil
	}
	var sec corev1.Secret
	key := client.ObjectKey{Namespace: cd.Metadata.Namespace, Name: clusterName + "-kubeconfig"}
	if err := c.cfg.Management.Get(ctx, key, &sec); err != nil {
		return "", fmt.Errorf("read kubeconfig secret %s: %w", key, err)
	}
	wl, err := workloadClient(sec.Data["value"])
	if err != nil {
		return "", fmt.Errorf("kubeconfig secret %s: %w", key, err)
	}
	var tok corev1.Secret
	err = wl.Get(ctx, client.ObjectKey{Namespace: AgentNamespace, Name: agentTokenSecret}, &tok)
	switch {
	case err == nil:
		// Installed before (this hub or before a restart): no new token.
		return AgentInstalled, nil
	case !apierrors.IsNotFound(err):
		return "", fmt.Errorf("cluster %s: read Secret %s/%s: %w", name, AgentNamespace, agentTokenSecret, err)
	}
	info, err := c.cfg.Fleet.CreateToken(ctx, fleet.TokenRequest{Cluster: name, TTL: agentTokenTTL, Uses: 1})
	if err != nil {
		return "", err
	}
	objs, err := c.agentObjects(info.Token)
	if err != nil {
		return "", err
	}
	// The token Secret last: its presence says the rest is there.
	ordered := append(objs[:0:0], objs...)
	for i, u := range ordered {
		if u.GetKind() == "Secret" && u.GetName() == agentTokenSecret {
			ordered = append(append(ordered[:i:i], ordered[i+1:]...), u)
			break
		}
	}
	for _, u := range ordered {
		if err := wl.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("cluster %s: create %s %s: %w", name, u.GetKind(), u.GetName(), err)
		}
	}
	c.log.Info("agent installed", "deployment", cd.Metadata.Namespace+"/"+name, "token_id", info.ID, "objects", len(ordered))
	return AgentInstalled, nil
}

// agentObjects renders bundles/agent for this hub with token.
func (c *Controller) agentObjects(token string) ([]*unstructured.Unstructured, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(agentchart.Files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := agentchart.Files.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: p, Data: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("agent chart: %w", err)
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("agent chart: %w", err)
	}
	addrs := make([]any, len(c.cfg.HubAddrs))
	for i, a := range c.cfg.HubAddrs {
		addrs[i] = a
	}
	vals := map[string]any{"createNamespace": true, "token": token, "hub": map[string]any{"addresses": addrs}}
	if c.cfg.AgentImage != "" {
		vals["image"] = map[string]any{"repository": c.cfg.AgentImage}
	}
	objs, err := renderChart(ch, "tether-agent", AgentNamespace, vals)
	if err != nil {
		return nil, fmt.Errorf("agent chart: %w", err)
	}
	return objs, nil
}

func workloadClient(kubeconfig []byte) (client.Client, error) {
	if len(kubeconfig) == 0 {
		return nil, errors.New("no data.value")
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.Timeout = 15 * time.Second
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(rc, client.Options{Scheme: scheme})
}
