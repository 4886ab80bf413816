package observe

import (
	"context"
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The workloads whose readiness Health checks, by kind of the apps and
// batch groups, read at the version the typed checks below understand
// (whatever version the manifest wrote).
var (
	workloadResources = map[string]schema.GroupVersionResource{
		"Deployment":  appsv1.SchemeGroupVersion.WithResource("deployments"),
		"StatefulSet": appsv1.SchemeGroupVersion.WithResource("statefulsets"),
		"DaemonSet":   appsv1.SchemeGroupVersion.WithResource("daemonsets"),
		"Job":         batchv1.SchemeGroupVersion.WithResource("jobs"),
	}
	podsResource = corev1.SchemeGroupVersion.WithResource("pods")
)

func (o *Observer) checkWorkload(ctx context.Context, obj Object, ns string) (*Problem, error) {
	gvr, ok := workloadResources[obj.GVK.Kind]
	if !ok {
		return nil, nil
	}
	ref := obj.Ref(ns)
	u, err := o.dynamic.Resource(gvr).Namespace(ns).Get(ctx, obj.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return &Problem{Object: ref, What: "missing"}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", ref, err)
	}
	var (
		what     string
		selector *metav1.LabelSelector
	)
	switch obj.GVK.Kind {
	case "Deployment":
		var d appsv1.Deployment
		if err = fromUnstructured(u, &d); err == nil {
			what, selector = deploymentNotReady(&d), d.Spec.Selector
		}
	case "StatefulSet":
		var s appsv1.StatefulSet
		if err = fromUnstructured(u, &s); err == nil {
			what, selector = statefulSetNotReady(&s), s.Spec.Selector
		}
	case "DaemonSet":
		var d appsv1.DaemonSet
		if err = fromUnstructured(u, &d); err == nil {
			what, selector = daemonSetNotReady(&d), d.Spec.Selector
		}
	case "Job":
		var j batchv1.Job
		if err = fromUnstructured(u, &j); err == nil {
			what, selector = jobNotReady(&j), j.Spec.Selector
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ref, err)
	}
	if what == "" {
		return nil, nil
	}
	p := &Problem{Object: ref, What: what}
	if selector != nil {
		p.Pod = o.podProblem(ctx, ns, selector)
	}
	return p, nil
}

// fromUnstructured converts an object the API server sent into its typed
// form.
func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), into)
}

func deploymentNotReady(d *appsv1.Deployment) string {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	if d.Generation > st.ObservedGeneration {
		return "rollout not yet observed by the controller"
	}
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return "progress deadline exceeded: " + c.Message
		}
	}
	switch {
	case st.AvailableReplicas < want:
		return fmt.Sprintf("%d/%d replicas available", st.AvailableReplicas, want)
	case st.UpdatedReplicas < want:
		return fmt.Sprintf("%d/%d replicas updated", st.UpdatedReplicas, want)
	case st.Replicas > st.UpdatedReplicas:
		return fmt.Sprintf("%d old replicas pending termination", st.Replicas-st.UpdatedReplicas)
	}
	return ""
}

func statefulSetNotReady(s *appsv1.StatefulSet) string {
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	st := s.Status
	if s.Generation > st.ObservedGeneration {
		return "rollout not yet observed by the controller"
	}
	switch {
	case st.AvailableReplicas < want:
		return fmt.Sprintf("%d/%d replicas available", st.AvailableReplicas, want)
	case s.Spec.UpdateStrategy.Type == appsv1.RollingUpdateStatefulSetStrategyType:
		partition := int32(0)
		if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil {
			partition = *ru.Partition
		}
		if st.UpdatedReplicas < want-partition {
			return fmt.Sprintf("%d/%d replicas updated", st.UpdatedReplicas, want-partition)
		}
	}
	return ""
}

func daemonSetNotReady(d *appsv1.DaemonSet) string {
	st := d.Status
	if d.Generation > st.ObservedGeneration {
		return "rollout not yet observed by the controller"
	}
	switch {
	case st.UpdatedNumberScheduled < st.DesiredNumberScheduled && d.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType:
		return fmt.Sprintf("%d/%d pods updated", st.UpdatedNumberScheduled, st.DesiredNumberScheduled)
	case st.NumberAvailable < st.DesiredNumberScheduled:
		return fmt.Sprintf("%d/%d pods available", st.NumberAvailable, st.DesiredNumberScheduled)
	}
	return ""
}

func jobNotReady(j *batchv1.Job) string {
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return ""
		case batchv1.JobFailed:
			return fmt.Sprintf("failed: %s: %s", c.Reason, c.Message)
		}
	}
	return fmt.Sprintf("not complete (%d active, %d succeeded, %d failed)", j.Status.Active, j.Status.Succeeded, j.Status.Failed)
}

// podProblem describes the first Pod of the workload that is not ready, or
// returns "".
func (o *Observer) podProblem(ctx context.Context, ns string, sel *metav1.LabelSelector) string {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		return ""
	}
	list, err := o.dynamic.Resource(podsResource).Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: s.String()})
	if err != nil {
		return ""
	}
	items := list.Items
	sort.Slice(items, func(i, j int) bool { return items[i].GetName() < items[j].GetName() })
	for i := range items {
		var p corev1.Pod
		if err := fromUnstructured(&items[i], &p); err != nil {
			return "" // as if the list had failed to decode
		}
		if why := podNotReady(&p); why != "" {
			return "pod " + ns + "/" + p.Name + ": " + why
		}
	}
	return ""
}

// podNotReady says why a Pod is not ready, most specific reason first, or
// returns "" when it is ready or has completed.
func podNotReady(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "terminating"
	}
	switch p.Status.Phase {
	case corev1.PodSucceeded:
		return ""
	case corev1.PodFailed:
		return join("Failed", p.Status.Reason, p.Status.Message)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return join(string(p.Status.Phase), c.Reason, c.Message)
		}
	}
	statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, cs := range statuses {
		switch {
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			return fmt.Sprintf("container %s waiting: %s", cs.Name, join(cs.State.Waiting.Reason, cs.State.Waiting.Message))
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode != 0:
			return fmt.Sprintf("container %s terminated: %s (exit code %d)", cs.Name, join(cs.State.Terminated.Reason, cs.State.Terminated.Message), cs.State.Terminated.ExitCode)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status == corev1.ConditionTrue {
				return ""
			}
			return join("not ready ("+string(p.Status.Phase)+")", c.Reason, c.Message)
		}
	}
	return "not ready (" + string(p.Status.Phase) + ")"
}

func join(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, ": ")
}
