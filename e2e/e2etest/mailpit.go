package e2etest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/cluster"
)

// Mailpit is a running Mailpit SMTP server (built by `e2e/tools/build.sh
// mailpit` into the harness binaries), with its HTTP API for reading what
// it received.
type Mailpit struct {
	// SMTPAddr is host:port of its SMTP server (no TLS, no auth).
	SMTPAddr string
	// URL is its HTTP API's base URL.
	URL string
}

// MailpitMessage is a received message as Mailpit's API lists it.
type MailpitMessage struct {
	ID      string `json:"ID"`
	Subject string `json:"Subject"`
	From    struct {
		Address string `json:"Address"`
	} `json:"From"`
	To []struct {
		Address string `json:"Address"`
	} `json:"To"`
	// Text is the plain-text body (filled in by Message).
	Text string `json:"Text"`
}

// StartMailpit starts Mailpit on free loopback ports, waits for its API
// and stops it when the test ends. extra are further mailpit flags
// (--smtp-tls-cert, --smtp-require-starttls, --smtp-auth-accept-any, ...).
func StartMailpit(t testing.TB, extra ...string) *Mailpit {
	t.Helper()
	binDir, err := cluster.BinDir("")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "mailpit")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("mailpit: %v (run e2e/tools/build.sh mailpit)", err)
	}
	smtpAddr, httpAddr := FreeAddr(t), FreeAddr(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"--smtp", smtpAddr, "--listen", httpAddr,
		"--database", filepath.Join(dir, "mailpit.db"), "--disable-version-check", "--quiet"}, extra...)
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := os.Create(filepath.Join(dir, "mailpit.log"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start mailpit: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		out.Close()
		if t.Failed() {
			if b, err := os.ReadFile(out.Name()); err == nil {
				t.Logf("mailpit log:\n%s", b)
			}
		}
	})
	m := &Mailpit{SMTPAddr: smtpAddr, URL: "http://" + httpAddr}
	Eventually(t, "mailpit's API", 30*time.Second, func() (bool, string) {
		select {
		case <-exited:
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("mailpit %v exited: %s", args, b)
		default:
		}
		resp, err := http.Get(m.URL + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return m
}

// Messages lists the received messages, newest first.
func (m *Mailpit) Messages(t testing.TB) []MailpitMessage {
	t.Helper()
	var out struct {
		Messages []MailpitMessage `json:"messages"`
	}
	m.get(t, "/api/v1/messages", &out)
	return out.Messages
}

// Message returns one message with its text body.
func (m *Mailpit) Message(t testing.TB, id string) MailpitMessage {
	t.Helper()
	var out MailpitMessage
	m.get(t, "/api/v1/message/"+id, &out)
	return out
}

func (m *Mailpit) get(t testing.TB, path string, v any) {
	t.Helper()
	resp, err := http.Get(m.URL + path)
	if err != nil {
		t.Fatalf("mailpit GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("mailpit GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("mailpit GET %s: %v", path, fmt.Errorf("decode: %w", err))
	}
}
