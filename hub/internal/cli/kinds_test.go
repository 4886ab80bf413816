package cli

import (
	"context"
	"encoding/pem"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
)

// A toy pair of kinds, known only to this test's registry: a Robot runs on
// a Battery of its namespace, and has a PIN viewers may not see.

type battery struct {
	objects.Header `json:",inline"`
	Spec           struct {
		Volts int `json:"volts"`
	} `json:"spec"`
}

type robot struct {
	objects.Header `json:",inline"`
	Spec           struct {
		Battery string `json:"battery"`
		Owner   string `json:"owner,omitempty"`
		PIN     string `json:"pin,omitempty"`
	} `json:"spec"`
}

func toyKinds(t *testing.T) *objects.Registry {
	t.Helper()
	r := objects.DefaultKinds()
	if err := objects.Register(r, objects.KindDef[*battery]{
		Kind: "Battery", New: func() *battery { return &battery{} }, APIVersion: "toys.example.com/v1",
		Plural: "batteries", Short: []string{"bat"},
		Spec: func(o *battery) any { return &o.Spec },
		Columns: []objects.Column[*battery]{
			{Header: "VOLTS", Value: func(o *battery) string { return strings.Repeat("+", o.Spec.Volts) }},
		},
	}); err != nil {
		t.Fatal(err)
	}
	if err := objects.Register(r, objects.KindDef[*robot]{
		Kind: "Robot", New: func() *robot { return &robot{} }, APIVersion: "toys.example.com/v1",
		Short: []string{"rb"},
		Spec:  func(o *robot) any { return &o.Spec },
		Validate: func(o *robot) objects.FieldErrors {
			var errs objects.FieldErrors
			if o.Spec.Battery == "" {
				errs.Add("spec.battery", "required")
			}
			return errs
		},
		References: []string{"Battery"},
		Refs: func(o *robot) []objects.Ref {
			return []objects.Ref{{Kind: "Battery", Name: o.Spec.Battery, Field: "spec.battery", Use: "power"}}
		},
		Columns: []objects.Column[*robot]{
			{Header: "BATTERY", Value: func(o *robot) string { return o.Spec.Battery }},
			objects.AgeColumn[*robot](),
			{Header: "OWNER", Wide: true, Value: func(o *robot) string { return o.Spec.Owner }},
		},
		Describe: func(o *robot) []objects.Section {
			return []objects.Section{{Title: "Power", Items: []objects.Item{{Key: "Battery", Value: o.Metadata.Namespace + "/" + o.Spec.Battery}}}}
		},
		Redact: func(o *robot, marker string) []string {
			if o.Spec.PIN == "" {
				return nil
			}
			o.Spec.PIN = marker
			return []string{"spec.pin"}
		},
	}); err != nil {
		t.Fatal(err)
	}
	return r
}

// toyHub serves the console API over a real bbolt store and real TLS with
// the toy registry (the API takes it from the repository), and returns
// admin and viewer console configs.
func toyHub(t *testing.T, kinds *objects.Registry) (admin, viewer string) {
	t.Helper()
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "hub.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	repo, err := objects.NewRepo(objects.RepoConfig{Store: st, Kinds: kinds})
	if err != nil {
		t.Fatal(err)
	}
	users := &api.Users{Store: st, Now: time.Now}
	var adminTok string
	if _, err := users.EnsureAdmin(context.Background(), func(tok string) error { adminTok = tok; return nil }); err != nil {
		t.Fatal(err)
	}
	viewerTok, err := users.Create(context.Background(), "vera", api.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(api.Handler(api.Config{Auth: users, Objects: repo}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	write := func(name, tok string) string {
		p := filepath.Join(dir, name+".yaml")
		if err := api.WriteClientConfig(p, api.ClientConfig{Server: srv.URL, CertificateAuthority: ca, Token: tok}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("admin", adminTok), write("viewer", viewerTok)
}

func TestToyKindWorksThroughAPIAndCLIWithOneRegistration(t *testing.T) {
	kinds := toyKinds(t)
	admin, viewer := toyHub(t, kinds)
	tether := func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		var out, errb strings.Builder
		code := mainKinds(kinds, args, strings.NewReader(stdin), &out, &errb)
		return code, out.String(), errb.String()
	}
	mustTether := func(stdin string, args ...string) string {
		t.Helper()
		code, out, errs := tether(stdin, args...)
		if code != 0 {
			t.Fatalf("tether %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	const (
		bat   = "apiVersion: toys.example.com/v1\nkind: Battery\nmetadata: {name: aa, namespace: lab}\nspec: {volts: 3}\n"
		robby = "apiVersion: toys.example.com/v1\nkind: Robot\nmetadata: {name: robby, namespace: lab}\nspec: {battery: aa, owner: ada, pin: '1234'}\n"
	)

	// A reference to a missing battery is refused at apply, naming the field.
	if code, _, errs := tether(robby, "--config", admin, "apply", "-f", "-"); code == 0 ||
		!strings.Contains(errs, "Robot lab/robby: spec.battery: Battery lab/aa not found") {
		t.Fatalf("apply without battery: exit %d: %s", code, errs)
	}
	out := mustTether(bat+"---\n"+robby, "--config", admin, "apply", "-f", "-")
	if out != "battery/aa created\nrobot/robby created\n" {
		t.Fatalf("apply: %q", out)
	}

	// get: every name of the kind, its columns, -o wide, -o yaml.
	for _, name := range []string{"robots", "robot", "rb", "Robot"} {
		out = mustTether("", "--config", admin, "get", name, "-n", "lab")
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 ||
			strings.Join(strings.Fields(lines[0]), " ") != "NAMESPACE NAME BATTERY AGE" || !strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "lab robby aa ") {
			t.Fatalf("get %s:\n%s", name, out)
		}
	}
	if out = mustTether("", "--config", admin, "get", "rb", "-A", "-o", "wide"); !strings.Contains(out, "OWNER") || !strings.Contains(out, "ada") {
		t.Fatalf("get -o wide:\n%s", out)
	}
	if out = mustTether("", "--config", admin, "get", "batteries", "aa", "-n", "lab"); !strings.Contains(out, "VOLTS") || !strings.Contains(out, "+++") {
		t.Fatalf("get battery:\n%s", out)
	}
	if out = mustTether("", "--config", admin, "get", "robot", "robby", "-n", "lab", "-o", "yaml"); !strings.Contains(out, "pin: \"1234\"") {
		t.Fatalf("admin get -o yaml:\n%s", out)
	}

	// describe: the object, then the kind's sections.
	out = mustTether("", "--config", admin, "describe", "rb", "robby", "-n", "lab")
	if !strings.Contains(out, "kind: Robot") || !strings.Contains(out, "\nPower:\n  Battery: lab/aa\n") {
		t.Fatalf("describe:\n%s", out)
	}

	// A viewer gets the kind's redaction.
	out = mustTether("", "--config", viewer, "get", "robot", "robby", "-n", "lab", "-o", "yaml")
	if strings.Contains(out, "1234") || !strings.Contains(out, api.Redacted) || !strings.Contains(out, "spec.pin hidden from role viewer") {
		t.Fatalf("viewer get -o yaml:\n%s", out)
	}

	// delete: the battery is in use by the robot; the robot goes first.
	if code, _, errs := tether("", "--config", admin, "delete", "battery", "aa", "-n", "lab"); code == 0 ||
		!strings.Contains(errs, "in use by Robot lab/robby (power)") {
		t.Fatalf("delete used battery: exit %d: %s", code, errs)
	}
	if out = mustTether("", "--config", admin, "delete", "robot", "robby", "-n", "lab"); out != "robot/robby deleted\n" {
		t.Fatalf("delete robot: %q", out)
	}
	if out = mustTether(bat, "--config", admin, "delete", "-f", "-"); out != "battery/aa deleted\n" {
		t.Fatalf("delete -f: %q", out)
	}
	if code, _, _ := tether("", "--config", admin, "get", "battery", "aa", "-n", "lab"); code != exitNotFound {
		t.Fatalf("get deleted battery: exit %d", code)
	}

	// The default CLI does not know the toy kinds.
	if code, _, errs := run(t, "", "--config", admin, "get", "robots"); code != exitUsage || !strings.Contains(errs, `unknown kind "robots"`) {
		t.Fatalf("default CLI: exit %d: %s", code, errs)
	}
}
