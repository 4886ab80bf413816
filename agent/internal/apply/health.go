package apply

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/release"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Health says whether a release is ready: Helm succeeded and every
// Deployment, StatefulSet and DaemonSet in it is available and every Job
// complete.
type Health struct {
	Ready bool
	// Message names the first object that is not ready and why, and when
	// its Pods say more, the first such Pod and its reason. Empty when
	// Ready.
	Message string
}

// problem is why one object is not ready.
type problem struct {
	object string // "Deployment ns/name"
	what   string // "0/2 replicas available"
	pod    string // "pod ns/x: Pending: Unschedulable: ..." or ""
}

func (p problem) message(suffix string) string {
	s := p.object + ": " + p.what + suffix
	if p.pod != "" {
		s += "; " + p.pod
	}
	return s
}

// Health checks the release's workloads once.
func (e *Engine) Health(ctx context.Context, name, namespace string) (Health, error) {
	p, err := e.check(ctx, name, namespace)
	if err != nil {
		return Health{}, err
	}
	if p == nil {
		return Health{Ready: true}, nil
	}
	return Health{Message: p.message("")}, nil
}

// WaitHealthy polls Health until the release is ready, ctx is done, or
// timeout (Config.HealthTimeout when 0) passes. On timeout the error wraps
// ErrNotReady and reads like "Deployment web/nginx: 0/2 replicas available
// after 2m0s". The returned Health is the last one seen.
func (e *Engine) WaitHealthy(ctx context.Context, name, namespace string, timeout time.Duration) (Health, error) {
	if timeout <= 0 {
		timeout = e.cfg.HealthTimeout
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(e.cfg.PollInterval)
	defer tick.Stop()
	for {
		p, err := e.check(ctx, name, namespace)
		switch {
		case err != nil && (errors.Is(err, ErrReleaseNotFound) || errors.Is(err, ErrForeignRelease) || ctx.Err() != nil):
			return Health{}, err
		case err != nil:
			// The API server may be briefly away; keep trying until the deadline.
			e.log.Debug("health check failed", "release", namespace+"/"+name, "err", err)
			p = &problem{object: "release " + namespace + "/" + name, what: err.Error()}
		case p == nil:
			return Health{Ready: true}, nil
		}
		select {
		case <-ctx.Done():
			return Health{Message: p.message("")}, context.Cause(ctx)
		case <-deadline.C:
			return Health{Message: p.message("")}, notReadyError(p.message(" after " + timeout.String()))
		case <-tick.C:
		}
	}
}

type notReadyError string

func (e notReadyError) Error() string        { return string(e) }
func (e notReadyError) Is(target error) bool { return target == ErrNotReady }

// check returns the first reason the release is not ready, or nil.
func (e *Engine) check(ctx context.Context, name, namespace string) (*problem, error) {
	rel, err := e.lastRelease(ctx, name, namespace)
	if err != nil {
		return nil, err
	}
	if st := rel.Info.Status; st != release.StatusDeployed {
		return &problem{object: "release " + namespace + "/" + name, what: fmt.Sprintf("%s: %s", st, rel.Info.Description)}, nil
	}
	objs, err := parseManifest(rel.Manifest)
	if err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", namespace, name, err)
	}
	for _, o := range objs {
		if o.gvk.Group != "apps" && o.gvk.Group != "batch" {
			continue
		}
		ns := o.namespace
		if ns == "" {
			ns = namespace
		}
		p, err := e.checkWorkload(ctx, o, ns)
		if err != nil {
			return nil, err
		}
		if p != nil {
			return p, nil
		}
	}
	return nil, nil
}

func (e *Engine) checkWorkload(ctx context.Context, o object, ns string) (*problem, error) {
	ref := o.ref(ns)
	var (
		what     string
		selector *metav1.LabelSelector
		err      error
	)
	switch o.gvk.Kind {
	case "Deployment":
		var d *appsv1.Deployment
		d, err = e.kube.AppsV1().Deployments(ns).Get(ctx, o.name, metav1.GetOptions{})
		if err == nil {
			what, selector = deploymentNotReady(d), d.Spec.Selector
		}
	case "StatefulSet":
		var s *appsv1.StatefulSet
		s, err = e.kube.AppsV1().StatefulSets(ns).Get(ctx, o.name, metav1.GetOptions{})
		if err == nil {
			what, selector = statefulSetNotReady(s), s.Spec.Selector
		}
	case "DaemonSet":
		var d *appsv1.DaemonSet
		d, err = e.kube.AppsV1().DaemonSets(ns).Get(ctx, o.name, metav1.GetOptions{})
		if err == nil {
			what, selector = daemonSetNotReady(d), d.Spec.Selector
		}
	case "Job":
		var j *batchv1.Job
		j, err = e.kube.BatchV1().Jobs(ns).Get(ctx, o.name, metav1.GetOptions{})
		if err == nil {
			what, selector = jobNotReady(j), j.Spec.Selector
		}
	default:
		return nil, nil
	}
	if apierrors.IsNotFound(err) {
		return &problem{object: ref, what: "missing"}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", ref, err)
	}
	if what == "" {
		return nil, nil
	}
	p := &problem{object: ref, what: what}
	if selector != nil {
		p.pod = e.podProblem(ctx, ns, selector)
	}
	return p, nil
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
func (e *Engine) podProblem(ctx context.Context, ns string, sel *metav1.LabelSelector) string {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		return ""
	}
	pods, err := e.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: s.String()})
	if err != nil {
		return ""
	}
	sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].Name < pods.Items[j].Name })
	for i := range pods.Items {
		if why := podNotReady(&pods.Items[i]); why != "" {
			return "pod " + ns + "/" + pods.Items[i].Name + ": " + why
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
