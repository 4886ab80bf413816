package provision

import (
	"context"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tetherfleet/tether/hub/internal/fleet"
)

// AnnotationKinds on an applied CAPI Cluster lists the kinds
// (Kind.version.group) of every object applied with it, so a deployment
// deleted from the store can be cleaned up from the management cluster
// alone, across hub restarts.
const AnnotationKinds = "tether.dev/applied-kinds"

// appliedKinds is the annotation value for objs.
func appliedKinds(objs []*unstructured.Unstructured) string {
	seen := map[string]bool{}
	var out []string
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		k := gvk.Kind + "." + gvk.Version + "." + gvk.Group
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return strings.Join(out, ",")
}

// collect deletes, from the management cluster, what the hub applied for
// ClusterDeployments that are no longer in the store (live holds
// "namespace/name" of those that are): the CAPI Cluster, whose deletion
// CAPI carries through its machines behind its own finalizers, and every
// other object of the recorded kinds with the deployment's labels. The
// cluster is revoked from the fleet. It reports whether some Cluster is
// still being deleted.
func (c *Controller) collect(ctx context.Context, live map[string]bool) (pending bool, err error) {
	var list clusterv1.ClusterList
	if err := c.cfg.Management.List(ctx, &list, client.HasLabels{LabelDeployment}); err != nil {
		return false, fmt.Errorf("list CAPI Clusters the hub applied: %w", err)
	}
	var errs []error
	for i := range list.Items {
		cl := &list.Items[i]
		name, ns := cl.Labels[LabelDeployment], cl.Labels[LabelDeploymentNamespace]
		if live[ns+"/"+name] {
			continue
		}
		pending = true
		if cl.DeletionTimestamp != nil {
			continue // CAPI is at it
		}
		c.log.Info("deleting cluster objects of a deleted ClusterDeployment", "deployment", ns+"/"+name, "cluster", cl.Name)
		sel := client.MatchingLabels{LabelDeployment: name, LabelDeploymentNamespace: ns}
		for _, k := range strings.Split(cl.Annotations[AnnotationKinds], ",") {
			parts := strings.SplitN(k, ".", 3)
			if len(parts) != 3 || (parts[0] == "Cluster" && parts[2] == clusterv1.GroupVersion.Group) {
				continue
			}
			var l unstructured.UnstructuredList
			l.SetGroupVersionKind(schema.GroupVersionKind{Kind: parts[0] + "List", Version: parts[1], Group: parts[2]})
			if err := c.cfg.Management.List(ctx, &l, client.InNamespace(ns), sel); err != nil {
				errs = append(errs, fmt.Errorf("list %s of ClusterDeployment %s/%s: %w", parts[0], ns, name, err))
				continue
			}
			for i := range l.Items {
				u := &l.Items[i]
				// What the Cluster owns (its infrastructure, control
				// plane, MachineDeployments) CAPI deletes in order behind
				// its finalizers; deleting, say, the DevCluster first
				// would take the workload API server away from the
				// machines' drain. Only what nothing owns is ours.
				if ownedBy(u, cl) {
					continue
				}
				if err := c.cfg.Management.Delete(ctx, u, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("delete %s %s/%s: %w", parts[0], ns, u.GetName(), err))
				}
			}
		}
		if err := c.cfg.Management.Delete(ctx, cl, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete Cluster %s/%s: %w", ns, cl.Name, err))
		}
		if c.cfg.Fleet != nil {
			if err := c.cfg.Fleet.Delete(ctx, name); err != nil && !errors.Is(err, fleet.ErrNotFound) {
				errs = append(errs, err)
			}
		}
	}
	return pending, errors.Join(errs...)
}

// ownedBy reports whether u has an owner reference to the Cluster cl.
func ownedBy(u *unstructured.Unstructured, cl *clusterv1.Cluster) bool {
	for _, r := range u.GetOwnerReferences() {
		if r.UID == cl.UID {
			return true
		}
	}
	return false
}
