package cli

import (
	"strings"
	"testing"
)

// TestUserRevokeRefusesTokenAtOnce: there was no way to take a console
// token back. `tether user revoke` deletes the user; its very next request
// is refused.
func TestUserRevokeRefusesTokenAtOnce(t *testing.T) {
	h := startHub(t)
	viewer := h.userConfig(t, "vic", "viewer")
	mustRun(t, "", "--config", viewer, "get", "clusters")

	if code, _, errs := run(t, "", "--config", viewer, "user", "revoke", "vic"); code != exitError || !strings.Contains(errs, "needs admin") {
		t.Fatalf("viewer revoking: exit %d, %q; want a refusal saying it needs admin", code, errs)
	}
	out := mustRun(t, "", "--config", h.admin, "user", "revoke", "vic")
	if !strings.Contains(out, `user "vic" (viewer) revoked`) {
		t.Errorf("revoke printed %q", out)
	}
	code, _, errs := run(t, "", "--config", viewer, "get", "clusters")
	if code != exitError || !strings.Contains(errs, "token not valid") {
		t.Fatalf("revoked viewer: exit %d, %q; want the token refused", code, errs)
	}
	if code, _, errs := run(t, "", "--config", h.admin, "user", "revoke", "vic"); code != exitNotFound || !strings.Contains(errs, `user "vic" not found`) {
		t.Fatalf("revoking again: exit %d, %q; want not found", code, errs)
	}
	if code, _, _ := run(t, "", "--config", h.admin, "user", "revoke"); code != exitUsage {
		t.Fatalf("revoke without a name: exit %d; want %d", code, exitUsage)
	}
}

// TestUserRevokeLastAdminNeedsForceAndResetAdminRecovers: revoking the
// last admin is refused unless --force; after a forced revoke (or a lost
// admin.yaml) `tether serve --reset-admin` on the stopped hub gives the
// admin back.
func TestUserRevokeLastAdminNeedsForceAndResetAdminRecovers(t *testing.T) {
	h := startHub(t)
	code, _, errs := run(t, "", "--config", h.admin, "user", "revoke", "admin")
	if code != exitError || !strings.Contains(errs, "only admin") || !strings.Contains(errs, "--force") {
		t.Fatalf("revoking the last admin: exit %d, %q; want a refusal naming --force", code, errs)
	}
	mustRun(t, "", "--config", h.admin, "get", "clusters") // still works

	bob := h.userConfig(t, "bob", "admin")
	mustRun(t, "", "--config", bob, "user", "revoke", "admin") // another admin is left
	if code, _, _ := run(t, "", "--config", h.admin, "get", "clusters"); code == 0 {
		t.Fatal("revoked admin token still works")
	}
	if code, _, errs := run(t, "", "--config", bob, "user", "revoke", "bob"); code == 0 || !strings.Contains(errs, "only admin") {
		t.Fatalf("bob revoking himself, the last admin: exit %d, %q; want a refusal", code, errs)
	}
	mustRun(t, "", "--config", bob, "user", "revoke", "bob", "--force")
	if code, _, _ := run(t, "", "--config", bob, "get", "clusters"); code == 0 {
		t.Fatal("force-revoked admin token still works")
	}

	// Nobody is admin now. Reset is refused while the hub runs...
	code, _, errs = run(t, "", "serve", "--data-dir", h.dataDir, "--reset-admin")
	if code != exitError || !strings.Contains(errs, "a hub is running") {
		t.Fatalf("reset-admin with the hub running: exit %d, %q; want a refusal", code, errs)
	}
	// ...and works once it is stopped.
	h.stop()
	_, _, errs = run(t, "", "serve", "--data-dir", h.dataDir, "--reset-admin")
	if !strings.Contains(errs, "export TETHER_CONFIG=") || !strings.Contains(errs, "admin.yaml") {
		t.Fatalf("reset-admin printed %q; want the path and the export line", errs)
	}
	h2 := startHubAt(t, h.dataDir)
	mustRun(t, "", "--config", h2.admin, "user", "create", "carol", "--role", "viewer")
}

func TestNewCommandsHaveHelp(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"user", "revoke", "--help"}, []string{"--force", "reset-admin", "refused"}},
		{[]string{"serve", "--help"}, []string{"--reset-admin", "--new-ca", "--api-read-timeout", "--api-idle-timeout", "--api-read-header-timeout", "--api-write-timeout"}},
	} {
		out := mustRun(t, "", tt.args...)
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("tether %s lacks %q:\n%s", strings.Join(tt.args, " "), w, out)
			}
		}
	}
}
