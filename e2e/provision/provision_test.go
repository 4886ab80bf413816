// Package provision is the end-to-end scenario of provisioning clusters
// through Cluster API: a real hub started with --management-kubeconfig
// of a harness management cluster that runs the real CAPI core, kubeadm
// and CAPD (in-memory backend) managers; a ClusterTemplate whose chart is
// bundles/cluster-templates/capd-in-memory; ClusterDeployments that
// provision, and bad input that applies nothing.
package provision

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/clientcmd"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

var bins *e2etest.Bins

func TestMain(m *testing.M) { e2etest.Main(m, &bins) }

const ns = "fleet"

// template is a k0rdent ClusterTemplate as k0rdent writes them, naming
// the pushed in-memory chart.
const template = `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterTemplate
metadata:
  name: capd-in-memory-0-1-0
  namespace: fleet
spec:
  helm:
    chartSpec:
      chart: capd-in-memory
      interval: 10m
      version: 0.1.0
      sourceRef:
        kind: HelmRepository
        name: tether-local
`

func deployment(name, tmpl, config string) string {
	return fmt.Sprintf(`apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterDeployment
metadata:
  name: %s
  namespace: fleet
spec:
  template: %s
  config: %s
`, name, tmpl, config)
}

func credential(name, secret string) string {
	return fmt.Sprintf(`apiVersion: k0rdent.mirantis.com/v1beta1
kind: Credential
metadata:
  name: %s
  namespace: fleet
spec:
  description: in-memory clusters need no cloud identity
  identityRef:
    apiVersion: v1
    kind: Secret
    name: %s
    namespace: fleet
`, name, secret)
}

func apply(t *testing.T, hub *e2etest.Hub, doc string) {
	t.Helper()
	if out, errOut, code := bins.RunStdin(t, hub.Env, []byte(doc), "tether", "apply", "-f", "-"); code != 0 {
		t.Fatalf("tether apply: exit %d: %s%s", code, out, errOut)
	}
}

// cdStatus is the part of a ClusterDeployment's status the test reads.
type cdStatus struct {
	Status struct {
		Phase        string `json:"phase"`
		K8sVersion   string `json:"k8sVersion"`
		ControlPlane string `json:"controlPlane"`
		Workers      string `json:"workers"`
		Agent        string `json:"agent"`
		Template     string `json:"template"`
		Services     []struct {
			Name, State, Message string
			Revision             uint64
		} `json:"services"`
		Conditions []struct {
			Type, Status, Reason, Message string
		} `json:"conditions"`
	} `json:"status"`
}

func (s cdStatus) cond(typ string) (status, reason, msg string) {
	for _, c := range s.Status.Conditions {
		if c.Type == typ {
			return c.Status, c.Reason, c.Message
		}
	}
	return "", "", ""
}

func (s cdStatus) String() string {
	var parts []string
	for _, c := range s.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s(%s: %s)", c.Type, c.Status, c.Reason, c.Message))
	}
	return fmt.Sprintf("phase %q cp %q workers %q; %s", s.Status.Phase, s.Status.ControlPlane, s.Status.Workers, strings.Join(parts, " "))
}

func getCD(t *testing.T, hub *e2etest.Hub, name string) cdStatus {
	t.Helper()
	var st cdStatus
	out, errOut, code := bins.Run(t, hub.Env, "tether", "get", "clusterdeployment", name, "-n", ns, "-o", "json")
	if code != 0 {
		t.Fatalf("tether get clusterdeployment %s: exit %d: %s", name, code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	return st
}

func waitCD(t *testing.T, hub *e2etest.Hub, name, what string, timeout time.Duration, ok func(cdStatus) bool) cdStatus {
	t.Helper()
	var st cdStatus
	e2etest.Eventually(t, "ClusterDeployment "+name+" "+what, timeout, func() (bool, string) {
		st = getCD(t, hub, name)
		return ok(st), st.String()
	})
	return st
}

// noCluster checks that nothing named name was applied to the management
// cluster.
func noCluster(t *testing.T, mgmt *cluster.Cluster, name string) {
	t.Helper()
	var cl clusterv1.Cluster
	err := mgmt.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &cl)
	if !apierrors.IsNotFound(err) {
		t.Errorf("CAPI Cluster %s/%s on the management cluster: err %v, want NotFound (nothing applied)", ns, name, err)
	}
}

func TestProvisionInMemoryCluster(t *testing.T) {
	mgmt := cluster.Start(t, cluster.Options{Management: true})
	hub := bins.StartHub(t, "--management-kubeconfig", mgmt.KubeconfigPath)
	chartDir := filepath.Join(e2etest.RepoRoot(t), "bundles", "cluster-templates", "capd-in-memory")
	if out, errOut, code := bins.Run(t, hub.Env, "tether", "chart", "push", chartDir); code != 0 {
		t.Fatalf("tether chart push: exit %d: %s%s", code, out, errOut)
	}
	apply(t, hub, template)

	// Credentials: one whose identity (a Secret) is on the management
	// cluster, one whose identity is not.
	must(t, mgmt.Apply(t.Context(), []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: fleet}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: capd-identity, namespace: fleet}\nstringData: {note: in-memory needs none}\n")))
	apply(t, hub, credential("capd", "capd-identity")+"---\n"+credential("lost", "no-such-secret"))

	// Bad input first: each gets a clear condition and applies nothing.
	apply(t, hub, deployment("bad-template", "no-such-template", "{}")+"---\n"+
		deployment("bad-config", "capd-in-memory-0-1-0", `{"workersNumber": "two"}`)+"---\n"+
		deployment("bad-field", "capd-in-memory-0-1-0", `{"region": "mars"}`)+"---\n"+
		deployment("bad-cred", "capd-in-memory-0-1-0", "{}")+"  credential: no-such-credential\n---\n"+
		deployment("lost-cred", "capd-in-memory-0-1-0", "{}")+"  credential: lost\n")
	for _, tc := range []struct{ name, cond, reason, msg string }{
		{"bad-template", "TemplateReady", "TemplateNotFound", `ClusterTemplate "no-such-template" not found`},
		{"bad-config", "TemplateReady", "InvalidConfig", "workersNumber"},
		{"bad-field", "TemplateReady", "InvalidConfig", "region"},
		{"bad-cred", "CredentialReady", "CredentialNotReady", `Credential "no-such-credential" not found`},
		{"lost-cred", "CredentialReady", "CredentialNotReady", "identity Secret fleet/no-such-secret"},
	} {
		st := waitCD(t, hub, tc.name, "Failed", time.Minute, func(s cdStatus) bool { return s.Status.Phase == "Failed" })
		status, reason, msg := st.cond(tc.cond)
		if status != "False" || reason != tc.reason || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: condition %s = %s/%s %q, want False/%s containing %q", tc.name, tc.cond, status, reason, msg, tc.reason, tc.msg)
		}
		noCluster(t, mgmt, tc.name)
	}

	pushHello(t, hub)
	var cred struct {
		Status struct{ Ready bool } `json:"status"`
	}
	bins.JSON(t, hub.Env, &cred, "tether", "get", "credential", "lost", "-n", ns, "-o", "json")
	if cred.Status.Ready {
		t.Error("Credential lost is ready, want not (its identity is missing)")
	}

	apply(t, hub, deployment("edge-1", "capd-in-memory-0-1-0", `{"workersNumber": 1}`)+"  credential: capd\n"+helloServiceSpec)

	// Hub killed (SIGKILL) while the cluster provisions: the restarted hub
	// picks up where it was and creates nothing twice.
	waitCD(t, hub, "edge-1", "Provisioning", time.Minute, func(s cdStatus) bool { return s.Status.Phase == "Provisioning" })
	var cl clusterv1.Cluster
	if err := mgmt.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "edge-1"}, &cl); err != nil {
		t.Fatal(err)
	}
	uid := cl.UID
	// Nothing starts an agent yet, so waiting for Enrolled times out.
	if out, errOut, code := bins.Run(t, hub.Env, "tether", "wait", "clusterdeployment", "edge-1", "-n", ns, "--for", "Enrolled", "--timeout", "2s", "--interval", "200ms"); code != 1 || !strings.Contains(errOut, "timed out") || !strings.Contains(out, "phase") {
		t.Errorf("tether wait --for Enrolled before any agent runs: exit %d, stdout %q, stderr %q; want 1, timed out, progress lines", code, out, errOut)
	}
	must(t, syscall.Kill(hub.Proc.PID(), syscall.SIGKILL))
	hub.Proc.Stop(t) // waits for the exit
	hub.Restart(t)

	// The console's progress view follows it to Ready.
	waitOut, waitErr, code := bins.Run(t, hub.Env, "tether", "wait", "clusterdeployment", "edge-1", "-n", ns, "--for", "Ready", "--timeout", "5m", "--interval", "500ms")
	if code != 0 || !strings.Contains(waitOut, "phase Ready") || !strings.Contains(waitOut, clusterv1.AvailableCondition) {
		t.Fatalf("tether wait clusterdeployment edge-1 --for Ready: exit %d, stderr %q, stdout:\n%s", code, waitErr, waitOut)
	}
	t.Logf("tether wait clusterdeployment edge-1 --for Ready:\n%s", waitOut)
	st := getCD(t, hub, "edge-1")
	if st.Status.K8sVersion != "v1.37.0" || st.Status.ControlPlane != "1/1" || st.Status.Workers != "1/1" {
		t.Errorf("edge-1 status: k8s %q control plane %q workers %q, want v1.37.0, 1/1, 1/1", st.Status.K8sVersion, st.Status.ControlPlane, st.Status.Workers)
	}
	for _, typ := range []string{"Applied", "CredentialReady", clusterv1.AvailableCondition, clusterv1.ClusterInfrastructureReadyCondition, clusterv1.ClusterControlPlaneAvailableCondition, clusterv1.ClusterWorkersAvailableCondition} {
		if status, _, _ := st.cond(typ); status != "True" {
			t.Errorf("edge-1 condition %s = %q, want True; %s", typ, status, st)
		}
	}
	if err := mgmt.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "edge-1"}, &cl); err != nil {
		t.Fatal(err)
	}
	if cl.UID != uid {
		t.Errorf("Cluster edge-1 UID %s after the hub was killed, want %s (not recreated)", cl.UID, uid)
	}
	managers := map[string]bool{}
	for _, mf := range cl.ManagedFields {
		managers[mf.Manager] = true
	}
	if !managers["tether-hub"] {
		t.Errorf("Cluster edge-1 field managers %v, want tether-hub among them", managers)
	}
	var mds clusterv1.MachineDeploymentList
	must(t, mgmt.Client.List(t.Context(), &mds, client.InNamespace(ns), client.MatchingLabels{"tether.dev/cluster-deployment": "edge-1"}))
	if len(mds.Items) != 1 {
		t.Errorf("MachineDeployments of edge-1 = %d, want 1", len(mds.Items))
	}

	enrolAgent(t, hub, mgmt, "edge-1")
	bins.MustRun(t, hub.Env, "tether", "wait", "clusterdeployment", "edge-1", "-n", ns, "--for", "Enrolled", "--timeout", "1m")

	// Scale workers 1 -> 2 through values.
	apply(t, hub, deployment("edge-1", "capd-in-memory-0-1-0", `{"workersNumber": 2}`)+helloServiceSpec)
	waitCD(t, hub, "edge-1", "with 2/2 workers", 3*time.Minute, func(s cdStatus) bool { return s.Status.Workers == "2/2" && s.Status.Phase == "Ready" })

	// Upgrade to another template: refused without a chain, allowed with
	// one.
	apply(t, hub, strings.ReplaceAll(template, "capd-in-memory-0-1-0", "capd-in-memory-0-1-1"))
	apply(t, hub, deployment("edge-1", "capd-in-memory-0-1-1", `{"workersNumber": 2}`)+helloServiceSpec)
	st = waitCD(t, hub, "edge-1", "upgrade refused", time.Minute, func(s cdStatus) bool {
		_, reason, _ := s.cond("TemplateReady")
		return reason == "UpgradeNotAllowed"
	})
	if st.Status.Phase != "Ready" || st.Status.Template != "capd-in-memory-0-1-0" {
		t.Errorf("after a refused upgrade: phase %q template %q, want Ready on capd-in-memory-0-1-0", st.Status.Phase, st.Status.Template)
	}
	apply(t, hub, `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterTemplateChain
metadata:
  name: capd-in-memory
  namespace: fleet
spec:
  supportedTemplates:
    - name: capd-in-memory-0-1-0
      availableUpgrades:
        - name: capd-in-memory-0-1-1
    - name: capd-in-memory-0-1-1
`)
	waitCD(t, hub, "edge-1", "upgraded along the chain", time.Minute, func(s cdStatus) bool {
		status, _, _ := s.cond("TemplateReady")
		return status == "True" && s.Status.Template == "capd-in-memory-0-1-1"
	})
	tmpls := bins.MustRun(t, hub.Env, "tether", "get", "clustertemplates", "-n", ns, "-o", "wide")
	if !strings.Contains(tmpls, "UPGRADES") || !regexp.MustCompile(`capd-in-memory-0-1-0\s+.*capd-in-memory-0-1-1`).MatchString(tmpls) {
		t.Errorf("tether get clustertemplates lacks the chain's upgrade 0-1-0 -> 0-1-1:\n%s", tmpls)
	}
	// The rendered chart's annotations went into the template's status.
	if !regexp.MustCompile(`capd-in-memory-0-1-0\s+.*v1\.37\.0\s+infrastructure-docker, control-plane-kubeadm, bootstrap-kubeadm`).MatchString(tmpls) {
		t.Errorf("tether get clustertemplates -o wide lacks the chart's Kubernetes version and providers:\n%s", tmpls)
	}

	out := bins.MustRun(t, hub.Env, "tether", "get", "clusterdeployments", "-n", ns, "-o", "wide")
	for _, want := range []string{"PHASE", "K8S", "CONTROLPLANE", "WORKERS", "AGENT", "edge-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("tether get clusterdeployments -o wide lacks %q:\n%s", want, out)
		}
	}
	t.Logf("tether get clusterdeployments -o wide:\n%s", out)
	desc := bins.MustRun(t, hub.Env, "tether", "describe", "clusterdeployment", "edge-1", "-n", ns)
	for _, want := range []string{"Provisioning", "Conditions", "ControlPlaneAvailable", "Enrolled", "Events:", "Applied:", "Provisioning -> Ready", "AgentInstalled", "the cluster's agent connected"} {
		if !strings.Contains(desc, want) {
			t.Errorf("tether describe clusterdeployment edge-1 lacks %q:\n%s", want, desc)
		}
	}

	// Delete: the CAPI objects go, behind CAPI's finalizers, and the
	// cluster is revoked.
	deleteAndWait(t, hub, mgmt, "edge-1")
}

// deleteAndWait deletes a ClusterDeployment and waits until everything
// the hub applied for it is gone from the management cluster and the
// cluster is revoked.
func deleteAndWait(t *testing.T, hub *e2etest.Hub, mgmt *cluster.Cluster, name string) {
	t.Helper()
	bins.MustRun(t, hub.Env, "tether", "delete", "clusterdeployment", name, "-n", ns)
	sel := client.MatchingLabels{"tether.dev/cluster-deployment": name}
	e2etest.Eventually(t, "CAPI objects of "+name+" deleted", 3*time.Minute, func() (bool, string) {
		ctx := context.Background()
		var left []string
		for _, gvk := range []string{"Cluster.v1beta2.cluster.x-k8s.io", "MachineDeployment.v1beta2.cluster.x-k8s.io",
			"KubeadmControlPlane.v1beta2.controlplane.cluster.x-k8s.io", "KubeadmConfigTemplate.v1beta2.bootstrap.cluster.x-k8s.io",
			"DevCluster.v1beta2.infrastructure.cluster.x-k8s.io", "DevMachineTemplate.v1beta2.infrastructure.cluster.x-k8s.io"} {
			p := strings.SplitN(gvk, ".", 3)
			var l unstructured.UnstructuredList
			l.SetGroupVersionKind(schema.GroupVersionKind{Group: p[2], Version: p[1], Kind: p[0] + "List"})
			if err := mgmt.Client.List(ctx, &l, client.InNamespace(ns), sel); err != nil {
				return false, err.Error()
			}
			for _, u := range l.Items {
				left = append(left, p[0]+"/"+u.GetName())
			}
		}
		var rec corev1.ConfigMap
		if err := mgmt.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "tether-applied-" + name}, &rec); !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("ConfigMap/tether-applied-%s (%v)", name, err))
		}
		return len(left) == 0, fmt.Sprintf("left: %v", left)
	})
	if _, _, code := bins.Run(t, hub.Env, "tether", "get", "cluster", name); code == 0 {
		t.Errorf("tether get cluster %s succeeded after the ClusterDeployment was deleted, want it revoked", name)
	}
}

// TestNoManagementCluster: without --management-kubeconfig a
// ClusterDeployment naming a ClusterTemplate says so.
func TestNoManagementCluster(t *testing.T) {
	hub := bins.StartHub(t)
	chartDir := filepath.Join(e2etest.RepoRoot(t), "bundles", "cluster-templates", "capd-in-memory")
	if out, errOut, code := bins.Run(t, hub.Env, "tether", "chart", "push", chartDir); code != 0 {
		t.Fatalf("tether chart push: exit %d: %s%s", code, out, errOut)
	}
	apply(t, hub, template+"---\n"+deployment("edge-1", "capd-in-memory-0-1-0", "{}"))
	st := waitCD(t, hub, "edge-1", "Failed", time.Minute, func(s cdStatus) bool { return s.Status.Phase == "Failed" })
	status, reason, msg := st.cond("Applied")
	if status != "False" || reason != "NoManagementCluster" || !strings.Contains(msg, "--management-kubeconfig") {
		t.Errorf("condition Applied = %s/%s %q, want False/NoManagementCluster naming --management-kubeconfig", status, reason, msg)
	}
}

// helloServiceSpec (appended to a deployment) installs the hello chart.
const helloServiceSpec = `  serviceSpec:
    services:
      - template: hello-0-1-0
        name: hello
        namespace: hello
`

// pushHello pushes a chart of one ConfigMap and its ServiceTemplate.
func pushHello(t *testing.T, hub *e2etest.Hub) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "hello")
	must(t, os.MkdirAll(filepath.Join(dir, "templates"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte("apiVersion: v2\nname: hello\nversion: 0.1.0\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "templates", "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\ndata:\n  greeting: hi\n"), 0o644))
	if out, errOut, code := bins.Run(t, hub.Env, "tether", "chart", "push", dir); code != 0 {
		t.Fatalf("tether chart push hello: exit %d: %s%s", code, out, errOut)
	}
	apply(t, hub, `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata:
  name: hello-0-1-0
  namespace: fleet
spec:
  helm:
    chartSpec:
      chart: hello
      version: 0.1.0
      interval: 10m
      sourceRef:
        kind: HelmRepository
        name: tether-local
`)
}

// enrolAgent waits for the hub to install the agent into the new
// cluster, then starts an agent process with that cluster's kubeconfig
// and the token from the installed Secret (standing in for the
// Deployment's pod, which nothing runs here), and waits for it to enrol
// and install the hello service.
func enrolAgent(t *testing.T, hub *e2etest.Hub, mgmt *cluster.Cluster, name string) {
	t.Helper()
	waitCD(t, hub, name, "agent Installed", 2*time.Minute, func(s cdStatus) bool { return s.Status.Agent != "" })
	var kc corev1.Secret
	if err := mgmt.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name + "-kubeconfig"}, &kc); err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(t.TempDir(), name+".kubeconfig")
	must(t, os.WriteFile(kcPath, kc.Data["value"], 0o600))
	rc, err := clientcmd.RESTConfigFromKubeConfig(kc.Data["value"])
	must(t, err)
	wl, err := client.New(rc, client.Options{})
	must(t, err)
	var dep appsv1.Deployment
	must(t, wl.Get(t.Context(), client.ObjectKey{Namespace: "tether-system", Name: "tether-agent"}, &dep))
	var tok corev1.Secret
	must(t, wl.Get(t.Context(), client.ObjectKey{Namespace: "tether-system", Name: "tether-agent-token"}, &tok))
	token := string(tok.Data["token"])
	if token == "" {
		token = tok.StringData["token"]
	}
	if token == "" {
		t.Fatalf("Secret tether-system/tether-agent-token has no token: %v", tok.Data)
	}
	agent := bins.Start(t, "agent-"+name, nil, "tether-agent", "run", "--data-dir", t.TempDir(), "--hub", hub.AgentAddr,
		"--kubeconfig", kcPath, "--token", token, "--max-backoff", "2s")
	waitCD(t, hub, name, "agent Enrolled", 2*time.Minute, func(s cdStatus) bool { return s.Status.Agent == "Enrolled" })
	// The hub compiles serviceSpec for the enrolled cluster and the agent
	// installs it. CAPD's in-memory API server serves neither /version nor
	// OpenAPI: the agent's Helm worker assumes the Nodes' kubelet version
	// (the template's k8sVersion) and installs without client-side schema
	// validation. The hub reports the service Deployed, in both views, and
	// its ConfigMap is in the new cluster.
	hub.WaitServices(t, 3*time.Minute, map[string]string{name + "/hello/hello": "Deployed"})
	e2etest.Eventually(t, "ClusterDeployment "+name+" status.services hello Deployed", time.Minute, func() (bool, string) {
		st := getCD(t, hub, name)
		for _, sv := range st.Status.Services {
			if sv.Name == "hello" && sv.State == "Deployed" && sv.Revision > 0 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("services %+v", st.Status.Services)
	})
	var cm corev1.ConfigMap
	must(t, wl.Get(t.Context(), client.ObjectKey{Namespace: "hello", Name: "hello"}, &cm))
	if cm.Data["greeting"] != "hi" {
		t.Errorf("ConfigMap hello/hello in %s: data %v, want greeting=hi", name, cm.Data)
	}
	// The worker said which version it assumed, from the Nodes (the
	// Machines' spec.version, the template's k8sVersion).
	agentLog, err := os.ReadFile(agent.Log)
	must(t, err)
	if !regexp.MustCompile(`serves no /version; assuming the highest kubelet version of its Nodes.* version=v1\.37\.0`).Match(agentLog) {
		t.Errorf("agent log %s does not say it assumed v1.37.0 for want of /version", agent.Log)
	}
	var rel corev1.SecretList
	must(t, wl.List(t.Context(), &rel, client.InNamespace("hello"), client.MatchingLabels{"owner": "helm", "name": "hello"}))
	if len(rel.Items) == 0 {
		t.Errorf("no Helm release Secret for hello/hello in %s", name)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
