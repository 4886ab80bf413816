package telemetry

import (
	"context"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// The fields of the objects the inventory reads; everything else in a
// list response is skipped by the decoder and never held.
type (
	listMeta struct {
		Continue string `json:"continue"`
	}
	ownerRef struct {
		Kind       string `json:"kind"`
		Name       string `json:"name"`
		Controller *bool  `json:"controller"`
	}
	objectMeta struct {
		Name            string            `json:"name"`
		Namespace       string            `json:"namespace"`
		UID             string            `json:"uid"`
		Labels          map[string]string `json:"labels"`
		Annotations     map[string]string `json:"annotations"`
		OwnerReferences []ownerRef        `json:"ownerReferences"`
	}
	resources map[string]resource.Quantity

	node struct {
		Metadata objectMeta `json:"metadata"`
		Spec     struct {
			ProviderID    string `json:"providerID"`
			PodCIDR       string `json:"podCIDR"`
			Unschedulable bool   `json:"unschedulable"`
		} `json:"spec"`
		Status struct {
			Capacity    resources `json:"capacity"`
			Allocatable resources `json:"allocatable"`
			Addresses   []struct {
				Type    string `json:"type"`
				Address string `json:"address"`
			} `json:"addresses"`
			NodeInfo struct {
				KernelVersion           string `json:"kernelVersion"`
				OSImage                 string `json:"osImage"`
				ContainerRuntimeVersion string `json:"containerRuntimeVersion"`
				KubeletVersion          string `json:"kubeletVersion"`
				KubeProxyVersion        string `json:"kubeProxyVersion"`
				SystemUUID              string `json:"systemUUID"`
			} `json:"nodeInfo"`
		} `json:"status"`
	}

	container struct {
		Name      string `json:"name"`
		Resources struct {
			Requests resources `json:"requests"`
			Limits   resources `json:"limits"`
		} `json:"resources"`
	}
	containerStatus struct {
		Name         string `json:"name"`
		RestartCount int64  `json:"restartCount"`
		State        struct {
			Running *struct {
				StartedAt time.Time `json:"startedAt"`
			} `json:"running"`
			Waiting *struct {
				Reason string `json:"reason"`
			} `json:"waiting"`
			Terminated *struct {
				Reason     string    `json:"reason"`
				FinishedAt time.Time `json:"finishedAt"`
			} `json:"terminated"`
		} `json:"state"`
	}
	pod struct {
		Metadata objectMeta `json:"metadata"`
		Spec     struct {
			NodeName          string      `json:"nodeName"`
			PriorityClassName string      `json:"priorityClassName"`
			HostNetwork       bool        `json:"hostNetwork"`
			Containers        []container `json:"containers"`
		} `json:"spec"`
		Status struct {
			Phase             string            `json:"phase"`
			HostIP            string            `json:"hostIP"`
			PodIP             string            `json:"podIP"`
			StartTime         *time.Time        `json:"startTime"`
			ContainerStatuses []containerStatus `json:"containerStatuses"`
		} `json:"status"`
	}

	namespace struct {
		Metadata objectMeta `json:"metadata"`
		Status   struct {
			Phase string `json:"phase"`
		} `json:"status"`
	}

	pvc struct {
		Metadata objectMeta `json:"metadata"`
		Spec     struct {
			StorageClassName *string `json:"storageClassName"`
			VolumeName       string  `json:"volumeName"`
			VolumeMode       *string `json:"volumeMode"`
			Resources        struct {
				Requests resources `json:"requests"`
			} `json:"resources"`
		} `json:"spec"`
		Status struct {
			Phase string `json:"phase"`
		} `json:"status"`
	}
)

// Inventory families, with kube-state-metrics' names, types and labels.
var (
	famNodeInfo        = family{"kube_node_info", "gauge", "Information about a cluster node."}
	famNodeLabels      = family{"kube_node_labels", "gauge", "Kubernetes labels converted to Prometheus labels (well-known node labels only, and capacity_type)."}
	famNodeCapacity    = family{"kube_node_status_capacity", "gauge", "The capacity for different resources of a node."}
	famNodeAllocatable = family{"kube_node_status_allocatable", "gauge", "The allocatable for different resources of a node that are available for scheduling."}
	famNodeUnsched     = family{"kube_node_spec_unschedulable", "gauge", "Whether a node can schedule new pods."}

	famPodInfo       = family{"kube_pod_info", "gauge", "Information about pod (and helm_release: the Helm release that owns it)."}
	famPodOwner      = family{"kube_pod_owner", "gauge", "Information about the Pod's owner."}
	famPodPhase      = family{"kube_pod_status_phase", "gauge", "The pods current phase."}
	famPodStart      = family{"kube_pod_start_time", "gauge", "Start time in unix timestamp for a pod."}
	famPodCompletion = family{"kube_pod_completion_time", "gauge", "Completion time in unix timestamp for a pod."}
	famPodRequests   = family{"kube_pod_container_resource_requests", "gauge", "The number of requested request resource by a container."}
	famPodLimits     = family{"kube_pod_container_resource_limits", "gauge", "The number of requested limit resource by a container."}
	famCtrRunning    = family{"kube_pod_container_status_running", "gauge", "Describes whether the container is currently in running state."}
	famCtrWaiting    = family{"kube_pod_container_status_waiting", "gauge", "Describes whether the container is currently in waiting state."}
	famCtrTerminated = family{"kube_pod_container_status_terminated", "gauge", "Describes whether the container is currently in terminated state."}
	famCtrRestarts   = family{"kube_pod_container_status_restarts_total", "counter", "The number of container restarts per container."}

	famNSPhase = family{"kube_namespace_status_phase", "gauge", "kubernetes namespace status phase."}

	famPVCInfo     = family{"kube_persistentvolumeclaim_info", "gauge", "Information about persistent volume claim."}
	famPVCRequests = family{"kube_persistentvolumeclaim_resource_requests_storage_bytes", "gauge", "The capacity of storage requested by the persistent volume claim."}
	famPVCPhase    = family{"kube_persistentvolumeclaim_status_phase", "gauge", "The phase the persistent volume claim is currently in."}
)

var (
	podPhases = []string{"Pending", "Succeeded", "Failed", "Unknown", "Running"}
	nsPhases  = []string{"Active", "Terminating"}
	pvcPhases = []string{"Lost", "Bound", "Pending"}
)

// Node labels exported by kube_node_labels (kube-state-metrics exports
// only allow-listed labels, as label_<sanitized name>).
var nodeLabelAllow = []string{
	"node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type",
	"topology.kubernetes.io/region", "topology.kubernetes.io/zone",
	"failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
	"kubernetes.io/arch", "kubernetes.io/os", "kubernetes.io/hostname",
	"karpenter.sh/capacity-type", "karpenter.sh/nodepool",
	"eks.amazonaws.com/capacityType", "eks.amazonaws.com/nodegroup",
	"cloud.google.com/gke-spot", "cloud.google.com/gke-preemptible", "cloud.google.com/gke-nodepool",
	"kubernetes.azure.com/scalesetpriority", "kubernetes.azure.com/agentpool",
	"node.kubernetes.io/lifecycle", "node-role.kubernetes.io/control-plane",
}

// CapacityTypeLabel is the label kube_node_labels carries for spot or
// on-demand capacity, normalised from the providers' node labels.
const CapacityTypeLabel = "capacity_type"

// capacityType normalises the providers' capacity labels to spot,
// on-demand or reserved ("" when no provider label says).
func capacityType(labels map[string]string) string {
	norm := func(v string) string {
		switch strings.ToLower(strings.ReplaceAll(v, "_", "-")) {
		case "spot", "preemptible":
			return "spot"
		case "on-demand", "ondemand", "regular", "normal":
			return "on-demand"
		case "reserved", "capacity-block":
			return "reserved"
		}
		return ""
	}
	for _, k := range []string{"karpenter.sh/capacity-type", "eks.amazonaws.com/capacityType", "kubernetes.azure.com/scalesetpriority", "node.kubernetes.io/lifecycle"} {
		if v, ok := labels[k]; ok {
			if n := norm(v); n != "" {
				return n
			}
		}
	}
	for _, k := range []string{"cloud.google.com/gke-spot", "cloud.google.com/gke-preemptible"} {
		if labels[k] == "true" {
			return "spot"
		}
	}
	return ""
}

// sanitizeLabelName is kube-state-metrics' label name rule: every
// character outside [a-zA-Z0-9_] becomes '_'.
func sanitizeLabelName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// resourceSample is kube-state-metrics' (resource, unit, value) of one
// resource quantity; ok is false for a resource it does not export.
func resourceSample(name string, q resource.Quantity) (res, unit string, v float64, ok bool) {
	switch {
	case name == "cpu":
		return "cpu", "core", float64(q.MilliValue()) / 1000, true
	case name == "memory", name == "ephemeral-storage", name == "storage",
		strings.HasPrefix(name, "hugepages-"), strings.HasPrefix(name, "attachable-volumes-"):
		return sanitizeLabelName(name), "byte", float64(q.Value()), true
	case name == "pods" || strings.Contains(name, "/"):
		// pods, and extended resources (nvidia.com/gpu, ...).
		return sanitizeLabelName(name), "integer", float64(q.Value()), true
	}
	return "", "", 0, false
}

func (c *collection) nodeSeries(n *node) {
	name := n.Metadata.Name
	var internalIP string
	for _, a := range n.Status.Addresses {
		if a.Type == "InternalIP" {
			internalIP = a.Address
			break
		}
	}
	ni := n.Status.NodeInfo
	c.add(famNodeInfo, 1, "node", name, "kernel_version", ni.KernelVersion, "os_image", ni.OSImage,
		"container_runtime_version", ni.ContainerRuntimeVersion, "kubelet_version", ni.KubeletVersion,
		"kubeproxy_version", ni.KubeProxyVersion, "provider_id", n.Spec.ProviderID, "pod_cidr", n.Spec.PodCIDR,
		"system_uuid", ni.SystemUUID, "internal_ip", internalIP)
	pairs := []string{"node", name}
	for _, k := range nodeLabelAllow {
		if v, ok := n.Metadata.Labels[k]; ok && v != "" {
			pairs = append(pairs, "label_"+sanitizeLabelName(k), boundValue(v, MaxObjectLabelBytes))
		}
	}
	pairs = append(pairs, CapacityTypeLabel, capacityType(n.Metadata.Labels))
	c.add(famNodeLabels, 1, pairs...)
	c.add(famNodeUnsched, boolValue(n.Spec.Unschedulable), "node", name)
	for _, f := range []struct {
		fam  family
		list resources
	}{{famNodeCapacity, n.Status.Capacity}, {famNodeAllocatable, n.Status.Allocatable}} {
		for _, rn := range sortedKeys(f.list) {
			if res, unit, v, ok := resourceSample(rn, f.list[rn]); ok {
				c.add(f.fam, v, "node", name, "resource", res, "unit", unit)
			}
		}
	}
}

// Annotation and labels naming the Helm release that owns an object.
const (
	helmReleaseAnnotation = "meta.helm.sh/release-name"
	instanceLabel         = "app.kubernetes.io/instance"
)

// HelmReleaseLabel is the label of kube_pod_info naming the Helm release
// that owns the pod (from meta.helm.sh/release-name, else
// app.kubernetes.io/instance; a tenant may set either, so it is a label
// value, bounded, and nothing more).
const HelmReleaseLabel = "helm_release"

func helmRelease(m *objectMeta) string {
	if v := m.Annotations[helmReleaseAnnotation]; v != "" {
		return boundValue(v, MaxObjectLabelBytes)
	}
	return boundValue(m.Labels[instanceLabel], MaxObjectLabelBytes)
}

func (c *collection) podSeries(p *pod) {
	ns, name, uid := p.Metadata.Namespace, p.Metadata.Name, p.Metadata.UID
	id := []string{"namespace", ns, "pod", name, "uid", uid}
	var ckind, cname string
	for _, o := range p.Metadata.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			ckind, cname = o.Kind, o.Name
		}
	}
	c.add(famPodInfo, 1, append(id, "host_ip", p.Status.HostIP, "pod_ip", p.Status.PodIP, "node", p.Spec.NodeName,
		"created_by_kind", ckind, "created_by_name", cname, "priority_class", p.Spec.PriorityClassName,
		"host_network", strconv.FormatBool(p.Spec.HostNetwork), HelmReleaseLabel, helmRelease(&p.Metadata))...)
	if len(p.Metadata.OwnerReferences) == 0 {
		c.add(famPodOwner, 1, append(id, "owner_kind", "<none>", "owner_name", "<none>", "owner_is_controller", "<none>")...)
	}
	for _, o := range p.Metadata.OwnerReferences {
		c.add(famPodOwner, 1, append(id, "owner_kind", o.Kind, "owner_name", o.Name,
			"owner_is_controller", strconv.FormatBool(o.Controller != nil && *o.Controller))...)
	}
	if p.Status.Phase != "" {
		for _, ph := range podPhases {
			c.add(famPodPhase, boolValue(ph == p.Status.Phase), append(id, "phase", ph)...)
		}
	}
	if p.Status.StartTime != nil {
		c.add(famPodStart, float64(p.Status.StartTime.Unix()), id...)
	}
	var done time.Time
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.FinishedAt.After(done) {
			done = t.FinishedAt
		}
	}
	if !done.IsZero() {
		c.add(famPodCompletion, float64(done.Unix()), id...)
	}
	for i := range p.Spec.Containers {
		ctr := &p.Spec.Containers[i]
		for _, f := range []struct {
			fam  family
			list resources
		}{{famPodRequests, ctr.Resources.Requests}, {famPodLimits, ctr.Resources.Limits}} {
			for _, rn := range sortedKeys(f.list) {
				if res, unit, v, ok := resourceSample(rn, f.list[rn]); ok {
					c.add(f.fam, v, append(id, "container", ctr.Name, "node", p.Spec.NodeName, "resource", res, "unit", unit)...)
				}
			}
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		cid := append(id, "container", cs.Name)
		c.add(famCtrRunning, boolValue(cs.State.Running != nil), cid...)
		c.add(famCtrWaiting, boolValue(cs.State.Waiting != nil), cid...)
		c.add(famCtrTerminated, boolValue(cs.State.Terminated != nil), cid...)
		c.add(famCtrRestarts, float64(cs.RestartCount), cid...)
	}
}

func (c *collection) namespaceSeries(n *namespace) {
	for _, ph := range nsPhases {
		c.add(famNSPhase, boolValue(ph == n.Status.Phase), "namespace", n.Metadata.Name, "phase", ph)
	}
}

func (c *collection) pvcSeries(p *pvc) {
	ns, name := p.Metadata.Namespace, p.Metadata.Name
	var sc, mode string
	if p.Spec.StorageClassName != nil {
		sc = *p.Spec.StorageClassName
	}
	if p.Spec.VolumeMode != nil {
		mode = *p.Spec.VolumeMode
	}
	c.add(famPVCInfo, 1, "namespace", ns, "persistentvolumeclaim", name, "storageclass", sc, "volumename", p.Spec.VolumeName, "volumemode", mode)
	if q, ok := p.Spec.Resources.Requests["storage"]; ok {
		c.add(famPVCRequests, float64(q.Value()), "namespace", ns, "persistentvolumeclaim", name)
	}
	if p.Status.Phase != "" {
		for _, ph := range pvcPhases {
			c.add(famPVCPhase, boolValue(ph == p.Status.Phase), "namespace", ns, "persistentvolumeclaim", name, "phase", ph)
		}
	}
}

// inventory lists nodes, pods, namespaces and PVCs page by page and adds
// their series.
func (col *Collector) inventory(ctx context.Context, c *collection) error {
	if err := listPaged(ctx, col, "/api/v1/nodes", func(n *node) { c.nodeSeries(n) }); err != nil {
		return err
	}
	if err := listPaged(ctx, col, "/api/v1/pods", func(p *pod) { c.podSeries(p) }); err != nil {
		return err
	}
	if err := listPaged(ctx, col, "/api/v1/namespaces", func(n *namespace) { c.namespaceSeries(n) }); err != nil {
		return err
	}
	return listPaged(ctx, col, "/api/v1/persistentvolumeclaims", func(p *pvc) { c.pvcSeries(p) })
}
