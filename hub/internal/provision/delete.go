package provision

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tetherfleet/tether/hub/internal/fleet"
)

// The applied record: a ConfigMap per ClusterDeployment on the management
// cluster, applied before the objects, naming the CAPI Cluster and the
// kinds (Kind.version.group) of every object applied. A deployment
// deleted from the store is cleaned up from the record alone, across hub
// restarts, even when an apply stopped half-way.
const (
	labelRecord   = "tether.dev/applied-record"
	recordPrefix  = "tether-applied-"
	recordKinds   = "kinds"
	recordCluster = "cluster"
)

// record is the applied record of a deployment's objects.
func record(name, namespace, clusterName string, objs []*unstructured.Unstructured) *unstructured.Unstructured {
	seen := map[string]bool{}
	var kinds []string
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		k := gvk.Kind + "." + gvk.Version + "." + gvk.Group
		if !seen[k] {
			seen[k] = true
			kinds = append(kinds, k)
		}
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"data": map[string]any{recordKinds: strings.Join(kinds, ","), recordCluster: clusterName},
	}}
	u.SetName(recordPrefix + name)
	u.SetNamespace(namespace)
	u.SetLabels(map[string]string{LabelDeployment: name, LabelDeploymentNamespace: namespace, labelRecord: "true"})
	return u
}

// collect deletes, from the management cluster, what the hub applied for
// ClusterDeployments no longer in the store (live holds "namespace/name"
// of those that are): first the CAPI Cluster, which CAPI takes down in
// order behind its finalizers (its infrastructure, control plane and
// machines; deleting the DevCluster first would take the workload API
// server away from the machines' drain); once it is gone, whatever of the
// recorded kinds still carries the deployment's labels (templates, which
// only a garbage collector would remove), then the record. The cluster is
// revoked from the fleet. It reports whether a deletion is under way.
func (c *Controller) collect(ctx context.Context, live map[string]bool) (pending bool, err error) {
	var recs corev1.ConfigMapList
	if err := c.cfg.Management.List(ctx, &recs, client.MatchingLabels{labelRecord: "true"}); err != nil {
		return false, fmt.Errorf("list applied records: %w", err)
	}
	var errs []error
	for i := range recs.Items {
		rec := &recs.Items[i]
		name, ns := rec.Labels[LabelDeployment], rec.Labels[LabelDeploymentNamespace]
		if live[ns+"/"+name] {
			continue
		}
		pending = true
		if c.cfg.Fleet != nil {
			if err := c.cfg.Fleet.Delete(ctx, name); err != nil && !errors.Is(err, fleet.ErrNotFound) {
				errs = append(errs, err)
			}
		}
		var cl clusterv1.Cluster
		err := c.cfg.Management.Get(ctx, client.ObjectKey{Namespace: ns, Name: rec.Data[recordCluster]}, &cl)
		switch {
		case err == nil && cl.DeletionTimestamp == nil:
			c.log.Info("deleting the CAPI Cluster of a deleted ClusterDeployment", "deployment", ns+"/"+name, "cluster", cl.Name)
			if err := c.cfg.Management.Delete(ctx, &cl, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete Cluster %s/%s: %w", ns, cl.Name, err))
			}
			continue
		case err == nil:
			continue // CAPI is at it
		case !apierrors.IsNotFound(err):
			errs = append(errs, fmt.Errorf("get Cluster %s/%s: %w", ns, rec.Data[recordCluster], err))
			continue
		}
		left, err := c.deleteLabelled(ctx, ns, name, rec.Data[recordKinds])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if left == 0 {
			if err := c.cfg.Management.Delete(ctx, rec); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete ConfigMap %s/%s: %w", ns, rec.Name, err))
			}
			c.log.Info("cluster objects of a deleted ClusterDeployment are gone", "deployment", ns+"/"+name)
		}
	}
	return pending, errors.Join(errs...)
}

// deleteLabelled deletes the objects of kinds labelled with a deployment
// and returns how many there were.
func (c *Controller) deleteLabelled(ctx context.Context, ns, name, kinds string) (int, error) {
	sel := client.MatchingLabels{LabelDeployment: name, LabelDeploymentNamespace: ns}
	n := 0
	for _, k := range strings.Split(kinds, ",") {
		parts := strings.SplitN(k, ".", 3)
		if len(parts) != 3 {
			continue
		}
		var l unstructured.UnstructuredList
		l.SetGroupVersionKind(schema.GroupVersionKind{Kind: parts[0] + "List", Version: parts[1], Group: parts[2]})
		if err := c.cfg.Management.List(ctx, &l, client.InNamespace(ns), sel); err != nil {
			return 0, fmt.Errorf("list %s of ClusterDeployment %s/%s: %w", parts[0], ns, name, err)
		}
		for i := range l.Items {
			n++
			u := &l.Items[i]
			if u.GetDeletionTimestamp() != nil {
				continue
			}
			if err := c.cfg.Management.Delete(ctx, u, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
				return 0, fmt.Errorf("delete %s %s/%s: %w", parts[0], ns, u.GetName(), err)
			}
		}
	}
	return n, nil
}
