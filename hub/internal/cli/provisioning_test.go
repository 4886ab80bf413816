package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

const ctTemplates = `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterTemplate
metadata: {name: aws-kubeadm-0-1-0, namespace: fleet}
spec:
  k8sVersion: v1.34.2
  providers: [infrastructure-aws, control-plane-kubeadm]
  helm:
    chartSpec: {chart: aws-kubeadm, version: 0.1.0, interval: 10m, sourceRef: {kind: HelmRepository, name: tether-local}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterTemplate
metadata: {name: aws-kubeadm-0-2-0, namespace: fleet}
spec:
  helm:
    chartSpec: {chart: aws-kubeadm, version: 0.2.0, interval: 10m, sourceRef: {kind: HelmRepository, name: tether-local}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterTemplate
metadata: {name: aws-kubeadm-0-3-0, namespace: fleet}
spec:
  helm:
    chartSpec: {chart: aws-kubeadm, version: 0.3.0, interval: 10m, sourceRef: {kind: HelmRepository, name: tether-local}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterTemplateChain
metadata: {name: aws, namespace: fleet}
spec:
  supportedTemplates:
    - name: aws-kubeadm-0-1-0
      availableUpgrades: [{name: aws-kubeadm-0-2-0}]
    - name: aws-kubeadm-0-2-0
      availableUpgrades: [{name: aws-kubeadm-0-3-0}]
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterTemplateChain
metadata: {name: aws-jump, namespace: tether-system}
spec:
  supportedTemplates:
    - name: aws-kubeadm-0-1-0
      availableUpgrades: [{name: aws-kubeadm-0-3-0}]
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterTemplateChain
metadata: {name: elsewhere, namespace: other}
spec:
  supportedTemplates:
    - name: aws-kubeadm-0-1-0
      availableUpgrades: [{name: aws-kubeadm-9-9-9}]
`

// TestGetClusterTemplatesShowsUpgrades: the chains of a template's
// namespace and of the system namespace give its available upgrades;
// another namespace's chain does not.
func TestGetClusterTemplatesShowsUpgrades(t *testing.T) {
	h := startHub(t)
	mustRun(t, ctTemplates, "--config", h.admin, "apply", "-f", "-")
	out := mustRun(t, "", "--config", h.admin, "get", "clustertemplates", "-n", "fleet")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "UPGRADES") || strings.Contains(lines[0], "PROVIDERS") {
		t.Fatalf("get clustertemplates: want a header with UPGRADES (no wide columns) and 3 rows:\n%s", out)
	}
	want := map[string]string{
		"aws-kubeadm-0-1-0": "aws-kubeadm-0-2-0, aws-kubeadm-0-3-0",
		"aws-kubeadm-0-2-0": "aws-kubeadm-0-3-0",
		"aws-kubeadm-0-3-0": "<none>",
	}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		name := f[1]
		got := strings.Join(f[len(f)-len(strings.Fields(want[name])):], " ")
		if got != want[name] {
			t.Errorf("%s: upgrades %q, want %q (line %q)", name, got, want[name], l)
		}
		if strings.Contains(l, "9-9-9") {
			t.Errorf("%s: shows an upgrade from another namespace's chain: %q", name, l)
		}
	}
	wide := mustRun(t, "", "--config", h.admin, "get", "clustertemplates", "-n", "fleet", "-o", "wide")
	if !strings.Contains(wide, "KUBERNETES") || !strings.Contains(wide, "v1.34.2") || !strings.Contains(wide, "infrastructure-aws, control-plane-kubeadm") {
		t.Errorf("get clustertemplates -o wide lacks the Kubernetes version or providers:\n%s", wide)
	}
	one := mustRun(t, "", "--config", h.admin, "get", "clustertemplate", "aws-kubeadm-0-2-0", "-n", "fleet")
	if !strings.Contains(one, "aws-kubeadm-0-3-0") || strings.Count(strings.TrimSpace(one), "\n") != 1 {
		t.Errorf("get clustertemplate aws-kubeadm-0-2-0: want one row with its upgrade:\n%s", one)
	}
	if y := mustRun(t, "", "--config", h.admin, "get", "clustertemplate", "aws-kubeadm-0-2-0", "-n", "fleet", "-o", "yaml"); !strings.Contains(y, "chart: aws-kubeadm") {
		t.Errorf("get clustertemplate -o yaml:\n%s", y)
	}
}

// TestWaitClusterDeployment: a deployment that cannot provision (this hub
// has no management cluster) ends the wait with exit code 1 and the
// condition that says why; describe shows the events the hub recorded.
func TestWaitClusterDeployment(t *testing.T) {
	h := startHub(t)
	mustRun(t, ctTemplates+`---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterDeployment
metadata: {name: edge-1, namespace: fleet}
spec:
  template: aws-kubeadm-0-1-0
  config: {region: eu-west-1}
`, "--config", h.admin, "apply", "-f", "-")
	code, out, errOut := run(t, "", "--config", h.admin, "wait", "clusterdeployment", "edge-1", "-n", "fleet", "--for", "Ready", "--timeout", "1m", "--interval", "100ms")
	if code != exitError || !strings.Contains(errOut, "phase Failed") || !strings.Contains(errOut, "NoManagementCluster") {
		t.Errorf("wait on a deployment without a management cluster: exit %d, stderr %q; want 1 naming phase Failed and NoManagementCluster", code, errOut)
	}
	if !strings.Contains(out, "phase Failed") || !strings.Contains(out, "Applied") {
		t.Errorf("wait progress lacks the phase or the Applied condition:\n%s", out)
	}
	desc := mustRun(t, "", "--config", h.admin, "describe", "clusterdeployment", "edge-1", "-n", "fleet")
	for _, want := range []string{"Events:", "PhaseChanged", "<none> -> Failed", "ConditionChanged", "Applied False (NoManagementCluster)"} {
		if !strings.Contains(desc, want) {
			t.Errorf("describe clusterdeployment lacks %q:\n%s", want, desc)
		}
	}

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"wait", "clusterdeployment", "edge-1", "-n", "fleet", "--for", "Available"}, exitUsage, `--for "Available"`},
		{[]string{"wait", "clusters", "edge-1"}, exitUsage, "only clusterdeployment"},
		{[]string{"wait", "clusterdeployment", "edge-1", "--timeout", "0s"}, exitUsage, "--timeout"},
		{[]string{"wait", "clusterdeployment", "nope", "-n", "fleet", "--timeout", "1m"}, exitNotFound, "nope"},
	} {
		code, _, errOut := run(t, "", append([]string{"--config", h.admin}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("tether %s: exit %d %q, want %d naming %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.msg)
		}
	}
}

// TestWaitProgressLines: a line when the phase or machines change, one
// per condition that changed, none for what stayed.
func TestWaitProgressLines(t *testing.T) {
	cd := &objects.ClusterDeployment{}
	cd.Status.Phase = objects.PhaseProvisioning
	cd.Status.Conditions = []objects.Condition{{Type: "InfrastructureReady", Status: "False", Reason: "Provisioning", Message: "waiting"}, {Type: "Applied", Status: "True", Reason: "Applied"}}
	var b strings.Builder
	p1 := progressOf(cd)
	printProgress(&b, nil, p1, 0)
	if n := strings.Count(b.String(), "\n"); n != 3 {
		t.Errorf("first poll: %d lines, want 3 (phase, 2 conditions):\n%s", n, b.String())
	}
	b.Reset()
	printProgress(&b, &p1, progressOf(cd), time.Second)
	if b.Len() != 0 {
		t.Errorf("nothing changed, printed:\n%s", b.String())
	}
	cd.Status.Conditions[0] = objects.Condition{Type: "InfrastructureReady", Status: "True", Reason: "Ready"}
	cd.Status.ControlPlane = "1/1"
	printProgress(&b, &p1, progressOf(cd), 2*time.Second)
	if got := b.String(); strings.Count(got, "\n") != 2 || !strings.Contains(got, "control plane 1/1") || !strings.Contains(got, "InfrastructureReady") || strings.Contains(got, "Applied") {
		t.Errorf("after a condition and the control plane changed:\n%s", got)
	}
}
