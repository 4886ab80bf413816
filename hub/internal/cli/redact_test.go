package cli

import (
	"strings"
	"testing"
)

const secretManifest = `apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: apps
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"stringData":{"password":"hunter2-in-annotation"}}'
type: Opaque
data:
  password: aHVudGVyMg==
stringData:
  user: admin-user-value
---
apiVersion: tether.dev/v1alpha1
kind: HelmRepository
metadata: {name: private, namespace: apps}
spec:
  url: https://robot:s3cr3t-repo-pass@charts.example.com/stable
---
apiVersion: tether.dev/v1alpha1
kind: HelmRepository
metadata: {name: tokenuser, namespace: apps}
spec:
  url: oci://ghp_tokenAsUser@ghcr.io/acme/charts
`

// TestViewerCannotReadSecretDataOrRepositoryCredentials: a viewer used to
// get Secret values and credentials in HelmRepository URLs through the
// console API. Now a viewer sees the keys with a redaction marker; an admin
// sees everything. Both go through the real HTTPS API and the CLI.
func TestViewerCannotReadSecretDataOrRepositoryCredentials(t *testing.T) {
	h := startHub(t)
	mustRun(t, secretManifest, "--config", h.admin, "apply", "-f", "-")
	viewer := h.userConfig(t, "vic", "viewer")

	leaks := []string{
		"aHVudGVyMg==", "hunter2", // data, base64 and plain
		"YWRtaW4tdXNlci12YWx1ZQ==", "admin-user-value", // stringData merged into data
		"s3cr3t-repo-pass", "ghp_tokenAsUser", // URL userinfo
	}
	views := map[string][]string{
		"get secret yaml":  {"get", "secret", "db", "-n", "apps", "-o", "yaml"},
		"get secrets json": {"get", "secrets", "-A", "-o", "json"},
		"describe secret":  {"describe", "secret", "db", "-n", "apps"},
		"get helmrepos":    {"get", "helmrepositories", "-n", "apps", "-o", "yaml"},
		"get helmrepo":     {"get", "hr", "private", "-n", "apps", "-o", "json"},
		"table helmrepos":  {"get", "hr", "-n", "apps"},
	}
	for name, args := range views {
		t.Run("viewer "+name, func(t *testing.T) {
			out := mustRun(t, "", append([]string{"--config", viewer}, args...)...)
			for _, l := range leaks {
				if strings.Contains(out, l) {
					t.Errorf("viewer output of %v leaks %q:\n%s", args, l, out)
				}
			}
		})
	}

	out := mustRun(t, "", "--config", viewer, "get", "secret", "db", "-n", "apps", "-o", "yaml")
	for _, want := range []string{"password: " + redactedMarkerYAML, "user: " + redactedMarkerYAML, "tether.dev/redacted"} {
		if !strings.Contains(out, want) {
			t.Errorf("viewer's secret yaml lacks %q (keys must stay visible):\n%s", want, out)
		}
	}
	out = mustRun(t, "", "--config", viewer, "get", "hr", "private", "-n", "apps", "-o", "yaml")
	if !strings.Contains(out, "charts.example.com/stable") {
		t.Errorf("viewer's helmrepository lost the host and path:\n%s", out)
	}

	// The admin sees every value.
	out = mustRun(t, "", "--config", h.admin, "get", "secret", "db", "-n", "apps", "-o", "yaml")
	for _, want := range []string{"password: aHVudGVyMg==", "user: YWRtaW4tdXNlci12YWx1ZQ==", "hunter2-in-annotation"} {
		if !strings.Contains(out, want) {
			t.Errorf("admin's secret yaml lacks %q:\n%s", want, out)
		}
	}
	out = mustRun(t, "", "--config", h.admin, "get", "hr", "-n", "apps", "-o", "yaml")
	for _, want := range []string{"robot:s3cr3t-repo-pass@", "ghp_tokenAsUser@"} {
		if !strings.Contains(out, want) {
			t.Errorf("admin's helmrepositories lack %q:\n%s", want, out)
		}
	}
}

// TestRedactedSecretIsNotReapplied: viewer output fed back through apply
// would overwrite real values with the marker; the hub refuses it.
func TestRedactedSecretIsNotReapplied(t *testing.T) {
	h := startHub(t)
	mustRun(t, secretManifest, "--config", h.admin, "apply", "-f", "-")
	viewer := h.userConfig(t, "vic", "viewer")
	redacted := mustRun(t, "", "--config", viewer, "get", "secret", "db", "-n", "apps", "-o", "yaml")
	code, _, errs := run(t, redacted, "--config", h.admin, "apply", "-f", "-")
	if code == 0 || !strings.Contains(errs, "redacted") {
		t.Fatalf("applying a redacted secret: exit %d, stderr %q; want a refusal naming the redaction", code, errs)
	}
	out := mustRun(t, "", "--config", h.admin, "get", "secret", "db", "-n", "apps", "-o", "yaml")
	if !strings.Contains(out, "password: aHVudGVyMg==") {
		t.Fatalf("the refused apply changed the secret:\n%s", out)
	}
}

// redactedMarkerYAML is how the documented marker prints in YAML.
const redactedMarkerYAML = "<redacted>"
