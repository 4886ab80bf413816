package cluster

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// Well-known node labels the harness sets.
const (
	LabelInstanceType = "node.kubernetes.io/instance-type"
	LabelRegion       = "topology.kubernetes.io/region"
	LabelZone         = "topology.kubernetes.io/zone"
	// AnnotationKwokNode marks a node as simulated by kwok.
	AnnotationKwokNode = "kwok.x-k8s.io/node"
)

// NodeSpec describes one simulated node. Empty fields take the defaults of
// [DefaultNodeSpec].
type NodeSpec struct {
	Name         string            // default "kwok-node-<i>"
	CPU          string            // allocatable CPU, e.g. "4" or "3500m"
	Memory       string            // allocatable memory, e.g. "16Gi"
	Pods         string            // allocatable pod count, e.g. "110"
	InstanceType string            // node.kubernetes.io/instance-type
	Region       string            // topology.kubernetes.io/region
	Zone         string            // topology.kubernetes.io/zone
	Labels       map[string]string // extra labels
}

// DefaultNodeSpec returns the values used for empty NodeSpec fields.
func DefaultNodeSpec() NodeSpec {
	return NodeSpec{CPU: "4", Memory: "16Gi", Pods: "110", InstanceType: "kwok.standard-4", Region: "local-1", Zone: "local-1a"}
}

func (n NodeSpec) withDefaults(i int) NodeSpec {
	d := DefaultNodeSpec()
	if n.Name == "" {
		n.Name = fmt.Sprintf("kwok-node-%d", i)
	}
	for _, f := range []struct {
		v   *string
		def string
	}{
		{&n.CPU, d.CPU}, {&n.Memory, d.Memory}, {&n.Pods, d.Pods},
		{&n.InstanceType, d.InstanceType}, {&n.Region, d.Region}, {&n.Zone, d.Zone},
	} {
		if *f.v == "" {
			*f.v = f.def
		}
	}
	return n
}

func (n NodeSpec) validate() error {
	for _, q := range []struct{ field, v string }{{"CPU", n.CPU}, {"Memory", n.Memory}, {"Pods", n.Pods}} {
		if q.v == "" {
			continue
		}
		if _, err := resource.ParseQuantity(q.v); err != nil {
			return fmt.Errorf("node %q: %s %q: %w", n.Name, q.field, q.v, err)
		}
	}
	return nil
}

func (n NodeSpec) node() *corev1.Node {
	list := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(n.CPU),
		corev1.ResourceMemory: resource.MustParse(n.Memory),
		corev1.ResourcePods:   resource.MustParse(n.Pods),
	}
	labels := map[string]string{
		"kubernetes.io/hostname": n.Name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
		"type":                   "kwok",
		LabelInstanceType:        n.InstanceType,
		LabelRegion:              n.Region,
		LabelZone:                n.Zone,
	}
	for k, v := range n.Labels {
		labels[k] = v
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   n.Name,
			Labels: labels,
			Annotations: map[string]string{
				AnnotationKwokNode:             "fake",
				"node.alpha.kubernetes.io/ttl": "0",
			},
		},
		Status: corev1.NodeStatus{
			Capacity:    list,
			Allocatable: list.DeepCopy(),
			NodeInfo: corev1.NodeSystemInfo{
				Architecture:    "amd64",
				OperatingSystem: "linux",
				KubeletVersion:  KubernetesVersion,
			},
		},
	}
}

// AddNodes creates simulated nodes and waits until kwok reports them Ready.
// The cluster must have been launched with controllers. AddNodes is not
// safe for concurrent use.
func (c *Cluster) AddNodes(ctx context.Context, specs ...NodeSpec) error {
	if c.procByName("kwok") == nil {
		return fmt.Errorf("add nodes to %s: cluster runs without kwok (set Options.Controllers or Nodes)", c.Name)
	}
	return c.addNodes(ctx, specs, 0)
}

func (c *Cluster) addNodes(ctx context.Context, specs []NodeSpec, count int) error {
	start := len(c.Nodes)
	specs = append(slices.Clone(specs), make([]NodeSpec, count)...)
	var names []string
	for i, s := range specs {
		s = s.withDefaults(start + i)
		if err := s.validate(); err != nil {
			return fmt.Errorf("add node: %w", err)
		}
		n := s.node()
		if c.kwokIP != "" {
			n.Annotations[AnnotationResourceMetricsPath] = "/metrics/nodes/" + n.Name + "/metrics/resource"
		}
		status := n.Status
		created, err := c.Clientset.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create node %s: %w", s.Name, err)
		}
		// Status is ignored on create; kwok keeps it after this. kwok and
		// the node lifecycle controller write the status too, so set
		// capacity on the latest version and retry on a conflict.
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := c.Clientset.CoreV1().Nodes().Get(ctx, created.Name, getOpts)
			if err != nil {
				return err
			}
			cur.Status.Capacity, cur.Status.Allocatable = status.Capacity, status.Allocatable
			if len(cur.Status.Conditions) == 0 {
				cur.Status.Conditions = status.Conditions
			}
			if len(cur.Status.Addresses) == 0 {
				cur.Status.Addresses = status.Addresses
			}
			if cur.Status.NodeInfo == (corev1.NodeSystemInfo{}) {
				cur.Status.NodeInfo = status.NodeInfo
			}
			_, err = c.Clientset.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("set status of node %s: %w", s.Name, err)
		}
		names = append(names, s.Name)
	}
	kwok := c.procByName("kwok")
	for _, name := range names {
		err := waitFor(ctx, "node "+name+" Ready", kwok, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
			n, err := c.Clientset.CoreV1().Nodes().Get(ctx, name, getOpts)
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					return cond.Status == corev1.ConditionTrue, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return err
		}
	}
	c.Nodes = append(c.Nodes, names...)
	return nil
}

var getOpts = metav1.GetOptions{}
