package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/fleet"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
	"github.com/tetherfleet/tether/protocol/tunnel"
)

// agentConn enrols cluster with a join token and opens a Sync stream the
// way an agent does (TLS 1.3, yamux, gRPC), offering the metrics kind.
func agentConn(t *testing.T, h *Hub, cluster string) fleetv1.Fleet_SyncClient {
	t.Helper()
	ctx := context.Background()
	info, err := h.fleet.CreateToken(ctx, fleet.TokenRequest{Cluster: cluster, TTL: time.Hour, Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.ca.Pool(), ServerName: "127.0.0.1"}
	dial := func(tc *tls.Config) *tunnel.Session {
		raw, err := net.Dial("tcp", h.AgentAddr())
		if err != nil {
			t.Fatal(err)
		}
		sess, err := tunnel.Dial(ctx, tls.Client(raw, tc), tunnel.DefaultConfig(), nil)
		if err != nil {
			t.Fatalf("tunnel dial: %v", err)
		}
		t.Cleanup(func() { sess.Close() })
		return sess
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cluster}}, key)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := dial(tc).ClientConn()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := fleetv1.NewEnrollmentClient(cc).Enroll(ctx, &fleetv1.EnrollRequest{Token: info.Token, CsrDer: csr, AgentVersion: "test"})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	tc = tc.Clone()
	tc.Certificates = []tls.Certificate{{Certificate: [][]byte{resp.GetCertificateDer()}, PrivateKey: key}}
	if cc, err = dial(tc).ClientConn(); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	stream, err := fleetv1.NewFleetClient(cc).Sync(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{
		Cluster: cluster, AgentVersion: "test", PayloadKinds: []string{fleetv1.PayloadKindStatus, telemetryv1.PayloadKind},
	}}}); err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil || !strings.Contains(strings.Join(msg.GetWelcome().GetPayloadKinds(), ","), telemetryv1.PayloadKind) {
		t.Fatalf("welcome = %v, %v; want one accepting %q", msg, err, telemetryv1.PayloadKind)
	}
	return stream
}

// sendMetrics sends one metrics payload and returns its ack.
func sendMetrics(t *testing.T, stream fleetv1.Fleet_SyncClient, seq uint64, b *telemetryv1.MetricBatch) *fleetv1.PayloadAck {
	t.Helper()
	data, err := telemetryv1.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Payload{Payload: &fleetv1.Payload{Seq: seq, Kind: telemetryv1.PayloadKind, Data: data}}}); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for the ack of payload %d: %v", seq, err)
		}
		if ack := msg.GetPayloadAck(); ack != nil {
			if ack.GetSeq() != seq {
				t.Fatalf("ack for %d, want %d", ack.GetSeq(), seq)
			}
			return ack
		}
	}
}

// promGet calls the hub's Prometheus API with token ("" for none).
func promGet(t *testing.T, h *Hub, token, path string, q url.Values) (int, map[string]any) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.ca.Pool(), MinVersion: tls.VersionTLS13}}}
	t.Cleanup(hc.CloseIdleConnections)
	req, err := http.NewRequest(http.MethodPost, "https://"+h.APIAddr()+path, strings.NewReader(q.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("%s: %d %q is not JSON", path, resp.StatusCode, body)
	}
	return resp.StatusCode, out
}

// TestHubStoresAgentMetricsAndServesPromQL: a hub started as `tether
// serve` starts it takes a metrics payload from an enrolled agent's Sync
// stream, stores it under the agent's cluster, and answers PromQL over
// the console API to viewer tokens (and 401 in Prometheus' error shape
// without one). A batch naming another cluster is refused by seq.
func TestHubStoresAgentMetricsAndServesPromQL(t *testing.T) {
	dir := t.TempDir()
	h, err := New(context.Background(), testConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	stop := runHub(t, h)
	stream := agentConn(t, h, "edge-1")
	now := time.Now()
	batch := &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{{
		Labels:  []*telemetryv1.Label{{Name: "__name__", Value: "node_memory_working_set_bytes"}, {Name: "node", Value: "n1"}},
		Samples: []*telemetryv1.Sample{{TimestampMs: now.Add(-time.Minute).UnixMilli(), Value: 1}, {TimestampMs: now.UnixMilli(), Value: 42}},
	}}, Targets: []*telemetryv1.TargetHealth{{Job: "podinfo", Url: "http://podinfo:9898/metrics", Health: "up"}}}
	if ack := sendMetrics(t, stream, 1, batch); ack.GetRefused() {
		t.Fatalf("batch refused: %s", ack.GetReason())
	}
	forged := &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{{
		Labels:  []*telemetryv1.Label{{Name: "__name__", Value: "up"}, {Name: "cluster", Value: "edge-2"}},
		Samples: []*telemetryv1.Sample{{TimestampMs: now.UnixMilli(), Value: 1}},
	}}}
	if ack := sendMetrics(t, stream, 2, forged); !ack.GetRefused() || !strings.Contains(ack.GetReason(), `"edge-2"`) {
		t.Fatalf("a batch naming edge-2 from edge-1: ack %v, want refused naming edge-2", ack)
	}

	viewer, err := adminClient(t, dir).CreateUser(context.Background(), "grafana", api.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	code, resp := promGet(t, h, viewer.Token, "/api/v1/query", url.Values{"query": {`node_memory_working_set_bytes{cluster="edge-1"}`}})
	res, _ := resp["data"].(map[string]any)["result"].([]any)
	if code != http.StatusOK || len(res) != 1 {
		t.Fatalf("query as viewer: %d %v", code, resp)
	}
	if v := res[0].(map[string]any)["value"].([]any)[1]; v != "42" {
		t.Errorf("value %v, want 42", v)
	}
	if code, resp := promGet(t, h, viewer.Token, "/api/v1/query", url.Values{"query": {`up`}}); code != http.StatusOK || len(resp["data"].(map[string]any)["result"].([]any)) != 0 {
		t.Errorf("the refused batch was stored: %v", resp)
	}
	for _, tok := range []string{"", "not-a-token"} {
		code, resp := promGet(t, h, tok, "/api/v1/query", url.Values{"query": {"1+1"}})
		if code != http.StatusUnauthorized || resp["status"] != "error" || resp["errorType"] != "unauthorized" || resp["error"] == "" {
			t.Errorf("token %q: %d %v, want 401 in Prometheus' error shape", tok, code, resp)
		}
	}
	cl, err := adminClient(t, dir).Cluster(context.Background(), "edge-1", false)
	if err != nil || len(cl.Targets) != 1 || cl.Targets[0].Health != "up" {
		t.Errorf("cluster edge-1 targets %+v, %v", cl.Targets, err)
	}

	// A restarted hub still has the samples (the TSDB's WAL is replayed).
	stop()
	if h, err = New(context.Background(), testConfig(dir)); err != nil {
		t.Fatal(err)
	}
	runHub(t, h)
	code, resp = promGet(t, h, viewer.Token, "/api/v1/query", url.Values{"query": {`count_over_time(node_memory_working_set_bytes{cluster="edge-1"}[5m])`}, "time": {strconv.FormatInt(now.Unix()+1, 10)}})
	res, _ = resp["data"].(map[string]any)["result"].([]any)
	if code != http.StatusOK || len(res) != 1 || res[0].(map[string]any)["value"].([]any)[1] != "2" {
		t.Errorf("after a restart: %d %v, want the 2 samples", code, resp)
	}
}
