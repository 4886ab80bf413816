package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/controller"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/store"
)

// Errors, matched with errors.Is; the wrapping error names the object and
// field.
var (
	// ErrNoManagement: a ClusterDeployment names a ClusterTemplate but
	// the hub runs without --management-kubeconfig.
	ErrNoManagement = errors.New("no management cluster")
	// ErrTemplate: the ClusterTemplate is missing or its chart cannot be
	// resolved.
	ErrTemplate = errors.New("cluster template unusable")
	// ErrCredential: the Credential or its identity is missing.
	ErrCredential = errors.New("credential not ready")
	// ErrInvalidConfig: spec.config fails the template's values schema.
	ErrInvalidConfig = errors.New("invalid config")
	// ErrUpgrade: spec.template moved to a template no
	// ClusterTemplateChain allows from the applied one.
	ErrUpgrade = errors.New("upgrade not allowed")
	// ErrRender: the template's chart does not load or render.
	ErrRender = errors.New("template does not render")
)

// FieldOwner is the server-side apply field manager of every object the
// hub applies to a management cluster.
const FieldOwner = "tether-hub"

// Repo is the part of the object repository the controller uses.
type Repo interface {
	Get(ctx context.Context, kind, namespace, name string) (objects.Object, error)
	List(ctx context.Context, kind, namespace string) ([]objects.Object, error)
	UpdateStatus(ctx context.Context, kind, namespace, name string, mutate func(objects.Object) error) (objects.Object, error)
}

// Charts resolves and opens charts in the hub's chart store.
type Charts interface {
	Resolve(ctx context.Context, ref charts.RepoRef, name, version string) (charts.Chart, error)
	Open(digest string) (io.ReadCloser, int64, error)
}

// Config configures a Controller.
type Config struct {
	Store controller.Watcher
	Repo  Repo
	// Charts holds ClusterTemplate charts.
	Charts Charts
	// Management is the management cluster; nil: ClusterDeployments that
	// name a ClusterTemplate get a condition saying it is missing.
	Management client.Client
	// Fleet issues the join token of each new cluster's agent and says
	// when it enrolled; nil: no agent is installed.
	Fleet Fleet
	// HubAddrs are the hub agent addresses a new cluster's agent dials.
	HubAddrs []string
	// AgentImage is the agent chart's image.repository; "" is the
	// chart's default.
	AgentImage string
	// SystemNamespaces are searched for ClusterTemplates and Credentials
	// after the deployment's own namespace.
	SystemNamespaces []string
	// GracePeriod: a False CAPI condition is a warning this long after
	// the first apply, and the phase Failed after it. Default 20m.
	GracePeriod time.Duration
	// Poll is how often a provisioning Cluster is looked at. Default 5s.
	Poll time.Duration
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{GracePeriod: 20 * time.Minute, Poll: 5 * time.Second}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	if c.Store == nil || c.Repo == nil || c.Charts == nil {
		return errors.New("provision: Config.Store, Repo and Charts are required")
	}
	if c.Fleet != nil && len(c.HubAddrs) == 0 {
		return errors.New("provision: Config.HubAddrs is required with Fleet")
	}
	if c.GracePeriod < 0 || c.Poll < 0 {
		return errors.New("provision: Config.GracePeriod and Poll must not be negative")
	}
	return nil
}

// Controller provisions ClusterDeployments through Cluster API.
type Controller struct {
	cfg Config
	log *slog.Logger
}

// New returns a Controller.
func New(cfg Config) (*Controller, error) {
	d := DefaultConfig()
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = d.GracePeriod
	}
	if cfg.Poll == 0 {
		cfg.Poll = d.Poll
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, log: cfg.Logger}, nil
}

// Run follows ClusterDeployments until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	loop, err := controller.New(controller.Config{
		Name:  "provisioning controller",
		Store: c.cfg.Store,
		Kinds: []string{objects.KindClusterDeployment, objects.KindClusterTemplate, objects.KindCredential,
			objects.KindClusterTemplateChain, objects.KindHelmRepository, charts.Kind},
		Reconcile: c.Reconcile,
		Logger:    c.log,
	})
	if err != nil {
		return err
	}
	return loop.Run(ctx)
}

// Reconcile converges every ClusterDeployment that names a
// ClusterTemplate.
func (c *Controller) Reconcile(ctx context.Context) (controller.Result, error) {
	list, err := c.cfg.Repo.List(ctx, objects.KindClusterDeployment, "")
	if err != nil {
		return controller.Result{}, fmt.Errorf("list ClusterDeployments: %w", err)
	}
	var res controller.Result
	live := map[string]bool{}
	for _, o := range list {
		cd := o.(*objects.ClusterDeployment)
		if cd.Spec.Template == objects.TemplateAdopted || cd.Spec.Template == "" {
			continue
		}
		live[cd.Metadata.Namespace+"/"+cd.Metadata.Name] = true
		st := c.reconcileOne(ctx, cd)
		if _, err := c.cfg.Repo.UpdateStatus(ctx, objects.KindClusterDeployment, cd.Metadata.Namespace, cd.Metadata.Name, func(o objects.Object) error {
			cur := o.(*objects.ClusterDeployment)
			st.apply(&cur.Status, c.cfg.Now())
			return nil
		}); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return controller.Result{}, fmt.Errorf("%s: %w", cd.Key(), err)
		}
		if st.pending {
			res.RetryAfter = c.cfg.Poll
		}
	}
	if c.cfg.Management != nil {
		pending, err := c.collect(ctx, live)
		if err != nil {
			return controller.Result{}, err
		}
		if pending {
			res.RetryAfter = c.cfg.Poll
		}
	}
	return res, nil
}

// outcome is what one pass learned about a deployment: the conditions to
// set and the status fields.
type outcome struct {
	conds   []objects.Condition
	phase   string
	fields  func(*objects.ClusterDeploymentStatus)
	pending bool
}

func (o *outcome) set(typ string, ok bool, reason, msg string) {
	s := "False"
	if ok {
		s = "True"
	}
	o.conds = append(o.conds, objects.Condition{Type: typ, Status: s, Reason: reason, Message: msg})
}

// apply sets the outcome into st and records an event for each change
// it makes: the objects applied, a condition whose status or reason
// changed, the phase, the agent's state.
func (o *outcome) apply(st *objects.ClusterDeploymentStatus, now time.Time) {
	oldPhase, oldAgent, oldHash := st.Phase, st.Agent, st.AppliedHash
	old := make(map[string]objects.Condition, len(st.Conditions))
	for _, c := range st.Conditions {
		old[c.Type] = c
	}
	for _, c := range o.conds {
		objects.SetCondition(&st.Conditions, c, now)
	}
	if o.phase != "" {
		st.Phase = o.phase
	}
	if o.fields != nil {
		o.fields(st)
	}
	if st.AppliedHash != oldHash {
		st.RecordEvent(now, "Applied", "Cluster API objects server-side applied ("+st.AppliedHash+")")
	}
	for _, c := range o.conds {
		if p, ok := old[c.Type]; ok && p.Status == c.Status && p.Reason == c.Reason {
			continue
		}
		msg := c.Type + " " + c.Status
		if c.Reason != "" {
			msg += " (" + c.Reason + ")"
		}
		if c.Status != "True" && c.Message != "" {
			msg += ": " + truncate(c.Message, 200)
		}
		st.RecordEvent(now, objects.EventConditionChanged, msg)
	}
	if st.Phase != oldPhase {
		st.RecordEvent(now, "PhaseChanged", orNone(oldPhase)+" -> "+st.Phase)
	}
	if st.Agent != oldAgent {
		switch st.Agent {
		case AgentEnrolled:
			st.RecordEvent(now, "Enrolled", "the cluster's agent connected to the hub")
		default:
			st.RecordEvent(now, "Agent"+st.Agent, "agent manifests (bundles/agent) created in the new cluster")
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// fail is bad input: the condition names it, nothing was applied.
func fail(o *outcome, typ, reason string, err error) *outcome {
	o.set(typ, false, reason, err.Error())
	o.phase = objects.PhaseFailed
	return o
}

func (c *Controller) reconcileOne(ctx context.Context, cd *objects.ClusterDeployment) *outcome {
	o := &outcome{}
	ns, name := cd.Metadata.Namespace, cd.Metadata.Name
	tmpl, err := c.template(ctx, ns, cd.Spec.Template)
	if err != nil {
		// A missing template may appear later; look again.
		o.pending = true
		return fail(o, objects.CondTemplateReady, "TemplateNotFound", fmt.Errorf("%s: spec.template: %w", cd.Key(), err))
	}
	if from := cd.Status.Template; from != "" && from != cd.Spec.Template {
		if err := c.upgradeAllowed(ctx, ns, from, cd.Spec.Template); err != nil {
			// The cluster keeps running on the applied template: its
			// phase stays, nothing is applied.
			o.set(objects.CondTemplateReady, false, "UpgradeNotAllowed", fmt.Sprintf("%s: spec.template: %v", cd.Key(), err))
			return o
		}
	}
	if c.cfg.Management == nil {
		return fail(o, objects.CondApplied, "NoManagementCluster",
			fmt.Errorf("%s: spec.template %q is a ClusterTemplate, which provisions through Cluster API: %w; start the hub with --management-kubeconfig", cd.Key(), cd.Spec.Template, ErrNoManagement))
	}
	if cd.Spec.Credential != "" {
		if err := c.credential(ctx, ns, cd.Spec.Credential); err != nil {
			o.pending = true
			return fail(o, objects.CondCredentialReady, "CredentialNotReady", fmt.Errorf("%s: spec.credential: %w", cd.Key(), err))
		}
		o.set(objects.CondCredentialReady, true, "IdentityFound", "")
	}
	archive, digest, err := c.chart(ctx, tmpl)
	if err != nil {
		o.pending = true
		return fail(o, objects.CondTemplateReady, "ChartNotResolved", fmt.Errorf("%s: spec.template %q: %w", cd.Key(), cd.Spec.Template, err))
	}
	r, err := Render(archive, name, ns, cd.Spec.Config)
	if err != nil {
		reason := "RenderFailed"
		if errors.Is(err, ErrInvalidConfig) {
			reason = "InvalidConfig"
		}
		return fail(o, objects.CondTemplateReady, reason, fmt.Errorf("%s: template %q: %w", cd.Key(), cd.Spec.Template, err))
	}
	o.set(objects.CondTemplateReady, true, "Rendered", fmt.Sprintf("chart %s, %d objects", digest, len(r.Objects)))
	c.templateStatus(ctx, tmpl, digest, r)
	k8s := tmpl.Spec.KubernetesVersion
	if k8s == "" {
		k8s = r.KubernetesVersion
	}
	if cd.Status.AppliedHash != r.Hash {
		rec := record(name, ns, clusterNameOf(cd, r), r.Objects)
		if err := c.applyAll(ctx, ns, append([]*unstructured.Unstructured{rec}, r.Objects...)); err != nil {
			o.pending = true
			o.set(objects.CondApplied, false, "ApplyFailed", fmt.Sprintf("%s: %v", cd.Key(), err))
			o.phase = objects.PhaseFailed
			return o
		}
		c.log.Info("applied cluster objects", "deployment", ns+"/"+name, "objects", len(r.Objects), "hash", r.Hash)
	}
	o.set(objects.CondApplied, true, "Applied", fmt.Sprintf("%d objects server-side applied", len(r.Objects)))
	since := cd.Status.ProvisioningSince
	if since == nil {
		now := c.cfg.Now()
		since = &now
	}
	clusterName := c.follow(ctx, o, cd, r, *since)
	agent := cd.Status.Agent
	if o.phase == objects.PhaseReady && c.cfg.Fleet != nil && agent != AgentEnrolled {
		state, err := c.installAgent(ctx, cd, clusterName)
		if err != nil {
			o.set(objects.CondAgentInstalled, false, "InstallFailed", fmt.Sprintf("%s: %v", cd.Key(), err))
		} else {
			agent = state
			o.set(objects.CondAgentInstalled, true, state, "")
		}
		// Until the agent enrols, look again.
		o.pending = agent != AgentEnrolled
	}
	hash, applied := r.Hash, cd.Spec.Template
	prev := o.fields
	o.fields = func(st *objects.ClusterDeploymentStatus) {
		st.AppliedHash, st.ChartDigest, st.KubernetesVersion, st.Agent, st.Template = hash, digest, k8s, agent, applied
		if st.ProvisioningSince == nil {
			st.ProvisioningSince = since
		}
		if prev != nil {
			prev(st)
		}
	}
	return o
}

// follow reads the CAPI Cluster into o.
func (c *Controller) follow(ctx context.Context, o *outcome, cd *objects.ClusterDeployment, r Rendered, since time.Time) (clusterName string) {
	clusterName = clusterNameOf(cd, r)
	var cl clusterv1.Cluster
	o.pending = true
	if err := c.cfg.Management.Get(ctx, client.ObjectKey{Namespace: cd.Metadata.Namespace, Name: clusterName}, &cl); err != nil {
		o.phase = objects.PhaseProvisioning
		o.set(clusterv1.AvailableCondition, false, "ClusterNotFound", fmt.Sprintf("CAPI Cluster %s/%s: %v", cd.Metadata.Namespace, clusterName, err))
		return clusterName
	}
	var falses []string
	for _, cc := range cl.Status.Conditions {
		if strings.HasPrefix(cc.Type, "Paused") || cc.Type == clusterv1.DeletingCondition {
			continue
		}
		o.conds = append(o.conds, objects.Condition{Type: cc.Type, Status: string(cc.Status), Reason: cc.Reason, Message: cc.Message})
		if cc.Status == metav1.ConditionFalse && cc.Type != clusterv1.ClusterRollingOutCondition && cc.Type != clusterv1.ClusterScalingUpCondition && cc.Type != clusterv1.ClusterScalingDownCondition && cc.Type != clusterv1.ClusterRemediatingCondition {
			falses = append(falses, cc.Type+": "+cc.Message)
		}
	}
	available := meta.IsStatusConditionTrue(cl.Status.Conditions, clusterv1.AvailableCondition)
	switch {
	case available:
		o.phase = objects.PhaseReady
		o.pending = false
	case c.cfg.Now().Sub(since) < c.cfg.GracePeriod:
		o.phase = objects.PhaseProvisioning
	default:
		o.phase = objects.PhaseFailed
		o.set("Provisioned", false, "GracePeriodExceeded", fmt.Sprintf("not Available %s after the first apply: %s", c.cfg.GracePeriod, strings.Join(falses, "; ")))
	}
	cp, wk := replicas(cl.Status.ControlPlane), workerReplicas(cl.Status.Workers)
	o.fields = func(st *objects.ClusterDeploymentStatus) { st.ControlPlane, st.Workers = cp, wk }
	return clusterName
}

func replicas(s *clusterv1.ClusterControlPlaneStatus) string {
	if s == nil {
		return ""
	}
	return fmt.Sprintf("%d/%d", deref(s.ReadyReplicas), deref(s.DesiredReplicas))
}

func workerReplicas(s *clusterv1.WorkersStatus) string {
	if s == nil {
		return ""
	}
	return fmt.Sprintf("%d/%d", deref(s.ReadyReplicas), deref(s.DesiredReplicas))
}

func deref(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

// template finds a ClusterTemplate in namespace, then the system
// namespaces.
func (c *Controller) template(ctx context.Context, namespace, name string) (*objects.ClusterTemplate, error) {
	for _, ns := range append([]string{namespace}, c.cfg.SystemNamespaces...) {
		o, err := c.cfg.Repo.Get(ctx, objects.KindClusterTemplate, ns, name)
		if err == nil {
			return o.(*objects.ClusterTemplate), nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: ClusterTemplate %q not found in namespace %q or %s", ErrTemplate, name, namespace, strings.Join(c.cfg.SystemNamespaces, ", "))
}

// chart resolves a template's chart and returns its archive and digest.
func (c *Controller) chart(ctx context.Context, t *objects.ClusterTemplate) ([]byte, string, error) {
	h := t.Spec.Helm
	if h.ChartRef != nil || h.ChartSource != nil {
		return nil, "", fmt.Errorf("%w: spec.helm: only chartSpec is supported for ClusterTemplates yet", ErrTemplate)
	}
	cs := h.ChartSpec
	ref := charts.RepoRef{Name: cs.SourceRef.Name}
	if cs.SourceRef.Name != charts.LocalRepo {
		if cs.SourceRef.Kind != "" && cs.SourceRef.Kind != objects.KindHelmRepository {
			return nil, "", fmt.Errorf("%w: spec.helm.chartSpec.sourceRef.kind %q: only HelmRepository is supported for ClusterTemplates yet", ErrTemplate, cs.SourceRef.Kind)
		}
		ro, err := c.cfg.Repo.Get(ctx, objects.KindHelmRepository, t.Metadata.Namespace, cs.SourceRef.Name)
		if err != nil {
			return nil, "", fmt.Errorf("%w: spec.helm.chartSpec.sourceRef: %w", ErrTemplate, err)
		}
		hr := ro.(*objects.HelmRepository)
		if hr.Spec.SecretRef != nil {
			return nil, "", fmt.Errorf("%w: HelmRepository %s: repositories with credentials are not supported for ClusterTemplates yet", ErrTemplate, hr.Metadata.Name)
		}
		ref.URL, ref.Type, ref.Insecure, ref.InsecureSkipTLSVerify = hr.Spec.URL, hr.Spec.Type, hr.Spec.Insecure, hr.Spec.InsecureSkipTLSVerify
	}
	ch, err := c.cfg.Charts.Resolve(ctx, ref, cs.Chart, cs.Version)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	rc, _, err := c.cfg.Charts.Open(ch.Digest)
	if err != nil {
		return nil, "", fmt.Errorf("%w: open chart %s: %w", ErrTemplate, ch.Digest, err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		return nil, "", fmt.Errorf("%w: read chart %s: %w", ErrTemplate, ch.Digest, err)
	}
	return buf.Bytes(), ch.Digest, nil
}

// credential checks a Credential and its identity, and records the result
// in the Credential's status.
func (c *Controller) credential(ctx context.Context, namespace, name string) error {
	var cred *objects.Credential
	for _, ns := range append([]string{namespace}, c.cfg.SystemNamespaces...) {
		o, err := c.cfg.Repo.Get(ctx, objects.KindCredential, ns, name)
		if err == nil {
			cred = o.(*objects.Credential)
			break
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	if cred == nil {
		return fmt.Errorf("%w: Credential %q not found in namespace %q", ErrCredential, name, namespace)
	}
	err := c.identity(ctx, cred)
	_, uerr := c.cfg.Repo.UpdateStatus(ctx, objects.KindCredential, cred.Metadata.Namespace, cred.Metadata.Name, func(o objects.Object) error {
		cur := o.(*objects.Credential)
		cond := objects.Condition{Type: "Ready", Status: "True", Reason: "IdentityFound"}
		if err != nil {
			cond = objects.Condition{Type: "Ready", Status: "False", Reason: "IdentityNotFound", Message: err.Error()}
		}
		cur.Status.Ready = err == nil
		objects.SetCondition(&cur.Status.Conditions, cond, c.cfg.Now())
		return nil
	})
	if err != nil {
		return err
	}
	return uerr
}

// identity checks that a Credential's identityRef exists on the
// management cluster.
func (c *Controller) identity(ctx context.Context, cred *objects.Credential) error {
	ref := cred.Spec.IdentityRef
	if ref == nil || ref.Kind == "" || ref.Name == "" {
		return fmt.Errorf("%w: Credential %s: spec.identityRef needs kind and name", ErrCredential, cred.Metadata.Name)
	}
	u := &unstructured.Unstructured{}
	apiVersion := ref.APIVersion
	if apiVersion == "" && ref.Kind == "Secret" {
		apiVersion = "v1"
	}
	u.SetAPIVersion(apiVersion)
	u.SetKind(ref.Kind)
	ns := ref.Namespace
	err := c.cfg.Management.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, u)
	if err != nil {
		where := ref.Name
		if ns != "" {
			where = ns + "/" + ref.Name
		}
		return fmt.Errorf("%w: Credential %s: identity %s %s on the management cluster: %w", ErrCredential, cred.Metadata.Name, ref.Kind, where, err)
	}
	return nil
}

// applyAll server-side applies objs into namespace, creating it first.
func (c *Controller) applyAll(ctx context.Context, namespace string, objs []*unstructured.Unstructured) error {
	nsApply := applycorev1.Namespace(namespace)
	if err := c.cfg.Management.Apply(ctx, nsApply, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("apply Namespace %s: %w", namespace, err)
	}
	for _, u := range objs {
		if err := c.cfg.Management.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply %s %s/%s: %w", u.GetKind(), namespace, u.GetName(), err)
		}
	}
	return nil
}

// upgradeAllowed reports whether a ClusterTemplateChain in namespace or
// the system namespaces lets a deployment move from one template to
// another.
func (c *Controller) upgradeAllowed(ctx context.Context, namespace, from, to string) error {
	for _, ns := range append([]string{namespace}, c.cfg.SystemNamespaces...) {
		chains, err := c.cfg.Repo.List(ctx, objects.KindClusterTemplateChain, ns)
		if err != nil {
			return err
		}
		for _, o := range chains {
			for _, st := range o.(*objects.ClusterTemplateChain).Spec.SupportedTemplates {
				if st.Name != from {
					continue
				}
				for _, u := range st.AvailableUpgrades {
					if u.Name == to {
						return nil
					}
				}
			}
		}
	}
	return fmt.Errorf("%w: no ClusterTemplateChain in namespace %q lists %q with an available upgrade to %q; the cluster stays on %q", ErrUpgrade, namespace, from, to, from)
}

// clusterNameOf is the name of the CAPI Cluster among the rendered
// objects; the deployment's name if there is none.
func clusterNameOf(cd *objects.ClusterDeployment, r Rendered) string {
	for _, u := range r.Objects {
		if u.GetKind() == "Cluster" && strings.HasPrefix(u.GetAPIVersion(), clusterv1.GroupVersion.Group+"/") {
			return u.GetName()
		}
	}
	return cd.Metadata.Name
}

// templateStatus records the chart's metadata in the ClusterTemplate's
// status (k0rdent's k8sVersion, providers, providerContracts) when it
// changed. A failure is only logged: it is informational.
func (c *Controller) templateStatus(ctx context.Context, t *objects.ClusterTemplate, digest string, r Rendered) {
	st := &t.Status
	if st.ChartDigest == digest && st.KubernetesVersion == r.KubernetesVersion &&
		slices.Equal(st.Providers, r.Providers) && maps.Equal(st.ProviderContracts, r.ProviderContracts) {
		return
	}
	_, err := c.cfg.Repo.UpdateStatus(ctx, objects.KindClusterTemplate, t.Metadata.Namespace, t.Metadata.Name, func(o objects.Object) error {
		cur := &o.(*objects.ClusterTemplate).Status
		cur.ChartDigest, cur.KubernetesVersion, cur.Providers, cur.ProviderContracts = digest, r.KubernetesVersion, r.Providers, r.ProviderContracts
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		c.log.Warn("record ClusterTemplate metadata", "template", t.Metadata.Namespace+"/"+t.Metadata.Name, "err", err)
	}
}
