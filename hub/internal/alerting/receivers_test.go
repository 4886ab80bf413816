package alerting

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/tetherfleet/tether/e2e/e2etest"
	"github.com/tetherfleet/tether/hub/internal/objects"
)

func testNotification() *Notification {
	a := Alert{Labels: labels.FromStrings("alertname", "TetherClusterOffline", "cluster", "edge-1", "severity", "warning"),
		Annotations: labels.FromStrings("summary", "Cluster edge-1 is offline"), StartsAt: t0, EndsAt: t0.Add(time.Hour)}
	return &Notification{Receiver: "team", Policy: "ops/p", GroupKey: "ops/p:0:{alertname=\"TetherClusterOffline\"}",
		GroupLabels: labels.FromStrings("alertname", "TetherClusterOffline"), CommonLabels: a.Labels, CommonAnnotations: a.Annotations,
		Alerts: []NotifiedAlert{{Alert: a, Status: "firing", Fingerprint: "00000000000000ab"}}, ExternalURL: "http://hub"}
}

// TestReceiverPayloads: each integration posts its service's format to
// the URL (and with the key) from the receiver's Secret.
func TestReceiverPayloads(t *testing.T) {
	type req struct {
		path, auth string
		body       map[string]any
		list       []map[string]any
	}
	got := make(chan req, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rq := req{path: r.URL.Path, auth: r.Header.Get("Authorization")}
		if strings.HasPrefix(string(b), "[") {
			_ = json.Unmarshal(b, &rq.list)
		} else {
			_ = json.Unmarshal(b, &rq.body)
		}
		got <- rq
		if r.URL.Path == "/pd" {
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer srv.Close()
	secrets := map[string]string{"slack/url": srv.URL + "/services/T0/B0/XXXX", "pd/key": "routing-key-1", "am/token": "am-token"}
	secret := func(ref objects.SecretKeyRef) (string, error) {
		v, ok := secrets[ref.Name+"/"+ref.Key]
		if !ok {
			return "", errors.New("missing")
		}
		return v, nil
	}
	rc := &objects.AlertReceiver{Name: "team",
		Slack:        &objects.SlackReceiver{URLSecretRef: objects.SecretKeyRef{Name: "slack", Key: "url"}, Channel: "#ops"},
		PagerDuty:    &objects.PagerDutyReceiver{RoutingKeySecretRef: objects.SecretKeyRef{Name: "pd", Key: "key"}, URL: srv.URL + "/pd"},
		Alertmanager: &objects.AlertmanagerReceiver{URL: srv.URL + "/am/", BearerTokenSecretRef: &objects.SecretKeyRef{Name: "am", Key: "token"}},
	}
	r, err := compileReceiver(rc, secret, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	n := testNotification()
	for _, in := range r.integrations {
		if err := in.Send(context.Background(), n); err != nil {
			t.Fatalf("%s: %v", in.Name(), err)
		}
		rq := <-got
		switch in.Name() {
		case "slack":
			if rq.path != "/services/T0/B0/XXXX" || rq.body["channel"] != "#ops" || rq.body["text"] != "[FIRING:1] TetherClusterOffline (edge-1 warning)" {
				t.Fatalf("slack: %+v", rq)
			}
		case "pagerduty":
			p, _ := rq.body["payload"].(map[string]any)
			if rq.body["routing_key"] != "routing-key-1" || rq.body["event_action"] != "trigger" || p["severity"] != "warning" || rq.body["dedup_key"] == "" {
				t.Fatalf("pagerduty: %+v", rq)
			}
		case "alertmanager":
			if rq.path != "/am/api/v2/alerts" || rq.auth != "Bearer am-token" || len(rq.list) != 1 {
				t.Fatalf("alertmanager: %+v", rq)
			}
			ls, _ := rq.list[0]["labels"].(map[string]any)
			if ls["cluster"] != "edge-1" || rq.list[0]["startsAt"] == nil {
				t.Fatalf("alertmanager alert: %+v", rq.list[0])
			}
		default:
			t.Fatalf("unexpected integration %s", in.Name())
		}
	}
	// Resolved: PagerDuty resolves the same dedup key.
	n.Alerts[0].Status = "resolved"
	pd := r.integrations[1]
	if err := pd.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	if rq := <-got; rq.body["event_action"] != "resolve" {
		t.Fatalf("pagerduty resolve: %+v", rq)
	}
	// A URL from a Secret is checked as apply checks inline ones.
	secrets["bad/url"] = "hooks.example/x"
	if _, err := compileReceiver(&objects.AlertReceiver{Name: "w", Webhook: &objects.WebhookReceiver{URLSecretRef: &objects.SecretKeyRef{Name: "bad", Key: "url"}}}, secret, nil); err == nil || !strings.Contains(err.Error(), "not an http or https URL") {
		t.Fatalf("bad URL in a Secret: %v", err)
	}
	// A missing Secret key names the receiver and integration.
	if _, err := compileReceiver(&objects.AlertReceiver{Name: "x", Slack: &objects.SlackReceiver{URLSecretRef: objects.SecretKeyRef{Name: "nope", Key: "k"}}}, secret, nil); err == nil || !strings.Contains(err.Error(), `receiver "x" slack`) {
		t.Fatalf("missing secret: %v", err)
	}
}

// TestSendErrorsHideURLTokens: a failing Slack URL (its path is the
// token) shows only its host in errors and deliveries.
func TestSendErrorsHideURLTokens(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "invalid_token", http.StatusForbidden)
	}))
	defer srv.Close()
	s := &slack{url: srv.URL + "/services/SECRET", client: srv.Client()}
	err := s.Send(context.Background(), testNotification())
	var perm permanent
	if err == nil || strings.Contains(err.Error(), "SECRET") || !errors.As(err, &perm) {
		t.Fatalf("error %v: want a permanent error without the token", err)
	}
}

// TestEmailOverSTARTTLSWithAuth: against a Mailpit that requires
// STARTTLS, the email integration upgrades the connection, logs in with
// PLAIN auth (the password from the Secret) and the message arrives.
func TestEmailOverSTARTTLSWithAuth(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	mp := e2etest.StartMailpit(t, "--smtp-tls-cert", cert, "--smtp-tls-key", key, "--smtp-require-starttls", "--smtp-auth-accept-any")
	rc := &objects.AlertReceiver{Name: "mail", Email: &objects.EmailReceiver{
		To: []string{"a@example.com", "b@example.com"}, From: "tether@example.com", Smarthost: mp.SMTPAddr,
		AuthUsername: "tether", AuthPasswordSecretRef: &objects.SecretKeyRef{Name: "smtp", Key: "password"},
		RequireTLS: true, InsecureSkipVerify: true,
	}}
	var asked objects.SecretKeyRef
	r, err := compileReceiver(rc, func(ref objects.SecretKeyRef) (string, error) { asked = ref; return "pw", nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if asked.Name != "smtp" || asked.Key != "password" {
		t.Fatalf("secret read %+v", asked)
	}
	if err := r.integrations[0].Send(context.Background(), testNotification()); err != nil {
		t.Fatal(err)
	}
	ms := mp.Messages(t)
	if len(ms) != 1 || ms[0].Subject != "[FIRING:1] TetherClusterOffline (edge-1 warning)" || len(ms[0].To) != 2 {
		t.Fatalf("messages %+v", ms)
	}
	// Without TLS on offer, requireTLS refuses to send in clear.
	plain := e2etest.StartMailpit(t)
	rc.Email.Smarthost = plain.SMTPAddr
	r, err = compileReceiver(rc, func(objects.SecretKeyRef) (string, error) { return "pw", nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = r.integrations[0].Send(context.Background(), testNotification())
	var perm permanent
	if err == nil || !strings.Contains(err.Error(), "does not offer STARTTLS") || !errors.As(err, &perm) {
		t.Fatalf("requireTLS without STARTTLS: %v", err)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mailpit"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
