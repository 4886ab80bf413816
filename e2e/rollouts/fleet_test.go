package rollouts

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/e2e/e2etest"
)

// console is a client of the hub's console API, from its admin.yaml.
type console struct {
	url   string
	token string
	hc    *http.Client
}

func newConsole(t testing.TB, configPath string) *console {
	t.Helper()
	b, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Server               string `json:"server"`
		CertificateAuthority string `json:"certificateAuthority"`
		Token                string `json:"token"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v", configPath, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cfg.CertificateAuthority)) {
		t.Fatalf("%s: no CA certificate", configPath)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, MaxIdleConnsPerHost: 64}
	return &console{url: cfg.Server, token: cfg.Token, hc: &http.Client{Transport: tr, Timeout: time.Minute}}
}

// do sends a request; a 404 returns errNotFound.
func (c *console) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.url+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusNotFound {
		return errNotFound
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

var errNotFound = errors.New("not found")

// Record is the part of a rollout's state (GET /v1/rollouts/NS/NAME, the
// same as `tether rollout status -o json`) the tests read.
type Record struct {
	Revision uint64 `json:"revision"`
	Phase    string `json:"phase"`
	Reason   string `json:"reason"`
	Stages   []struct {
		Name   string         `json:"name"`
		Phase  string         `json:"phase"`
		Counts map[string]int `json:"counts"`
	} `json:"stages"`
	Clusters map[string]*ClusterStatus `json:"clusters"`
}

// ClusterStatus is one cluster's place in a rollout.
type ClusterStatus struct {
	Stage     string    `json:"stage"`
	State     string    `json:"state"`
	Reason    string    `json:"reason"`
	Since     time.Time `json:"since"`
	Admitted  uint64    `json:"admitted"`
	Before    uint64    `json:"before"`
	Succeeded uint64    `json:"succeeded"`
}

// Counts returns the clusters in each state.
func (r *Record) Counts() map[string]int {
	out := map[string]int{}
	for _, c := range r.Clusters {
		out[c.State]++
	}
	return out
}

// Agent is what the simulator reports of one agent (fleetsim.AgentStatus).
type Agent struct {
	Cluster     string    `json:"cluster"`
	Online      bool      `json:"online"`
	Connected   bool      `json:"connected"`
	Connects    uint64    `json:"connects"`
	ConnectedAt time.Time `json:"connectedAt"`
	Revision    uint64    `json:"revision"`
	DesiredAt   time.Time `json:"desiredAt"`
	Applies     int       `json:"applies"`
	Outbox      uint64    `json:"outbox"`
	Services    []struct {
		Namespace    string `json:"namespace"`
		Name         string `json:"name"`
		ChartVersion string `json:"chartVersion"`
		State        string `json:"state"`
	} `json:"services"`
}

// Service returns the chart version and state of ns/name on the agent.
func (a Agent) Service(ns, name string) (version, state string) {
	for _, s := range a.Services {
		if s.Namespace == ns && s.Name == name {
			return s.ChartVersion, s.State
		}
	}
	return "", ""
}

// fleet is a hub process and a tether-fleetsim process with N enrolled
// simulated agents.
type fleet struct {
	bins    *e2etest.Bins
	hub     *e2etest.Hub
	con     *console
	sim     *e2etest.Proc
	control string
	names   []string
	labels  map[string]map[string]string
	hc      *http.Client
}

// fleetOptions are the knobs of startFleet.
type fleetOptions struct {
	agents      int
	deployDelay time.Duration
	// labels gives cluster i its labels.
	labels   func(i int) map[string]string
	simFlags []string
}

func clusterName(i int) string { return fmt.Sprintf("sim-%05d", i) }

// startFleet starts a hub, enrols opts.agents simulated agents and runs
// them until they are all connected.
func startFleet(t testing.TB, bins *e2etest.Bins, opts fleetOptions, hubFlags ...string) *fleet {
	t.Helper()
	n := opts.agents
	hubFlags = append([]string{"--max-agent-conns", fmt.Sprint(n + 1000), "--max-agent-conns-per-addr", fmt.Sprint(n + 1000),
		"--agent-conn-rate", "100000", "--agent-conn-burst", fmt.Sprint(n + 1000), "--log-level", "warn"}, hubFlags...)
	f := &fleet{bins: bins, hub: bins.StartHub(t, hubFlags...), labels: map[string]map[string]string{}, hc: &http.Client{Timeout: time.Minute}}
	f.con = newConsole(t, filepath.Join(f.hub.Dir, "admin.yaml"))

	// One token per cluster, through the API (a CLI process each would
	// take minutes at this size).
	toks := make([]string, n)
	f.names = make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		name := clusterName(i)
		f.names[i] = name
		lab := map[string]string{"fleet": "sim"}
		if opts.labels != nil {
			for k, v := range opts.labels(i) {
				lab[k] = v
			}
		}
		f.labels[name] = lab
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var info struct {
				Token string `json:"token"`
			}
			err := f.con.do("POST", "/v1/tokens", map[string]any{"cluster": name, "ttl": "1h", "uses": 1, "labels": lab}, &info)
			if err != nil {
				errs <- fmt.Errorf("token for %s: %w", name, err)
				return
			}
			toks[i] = info.Token
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokFile, ids := filepath.Join(dir, "tokens.txt"), filepath.Join(dir, "ids.json")
	if err := os.WriteFile(tokFile, []byte(strings.Join(toks, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bins.MustRun(t, nil, "tether-fleetsim", "--mode", "enroll", "--hub", f.hub.AgentAddr, "--tokens", tokFile, "--identities", ids, "--parallel", "16")

	f.control = e2etest.FreeAddr(t)
	args := append([]string{"tether-fleetsim", "--mode", "run", "--hub", f.hub.AgentAddr, "--identities", ids,
		"--control-addr", f.control, "--deploy-delay", opts.deployDelay.String(), "--parallel", "64"}, opts.simFlags...)
	f.sim = bins.Start(t, "fleetsim", nil, args...)
	e2etest.Eventually(t, fmt.Sprintf("%d simulated agents connected", n), 20*time.Minute, func() (bool, string) {
		as, err := f.agents()
		if err != nil {
			return false, err.Error()
		}
		up := 0
		for _, a := range as {
			if a.Connected {
				up++
			}
		}
		return up == n, fmt.Sprintf("%d of %d connected", up, n)
	})
	return f
}

// agents reads every simulated agent's state.
func (f *fleet) agents() (map[string]Agent, error) {
	resp, err := f.hc.Get("http://" + f.control + "/v1/agents")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var as []Agent
	if err := json.NewDecoder(resp.Body).Decode(&as); err != nil {
		return nil, err
	}
	m := make(map[string]Agent, len(as))
	for _, a := range as {
		m[a.Cluster] = a
	}
	return m, nil
}

func (f *fleet) mustAgents(t testing.TB) map[string]Agent {
	t.Helper()
	as, err := f.agents()
	if err != nil {
		t.Fatalf("simulator control API: %v", err)
	}
	return as
}

// control posts to the simulator's control API.
func (f *fleet) control_(t testing.TB, path string, req any) []string {
	t.Helper()
	b, _ := json.Marshal(req)
	resp, err := f.hc.Post("http://"+f.control+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("simulator %s: %s: %s", path, resp.Status, body)
	}
	var out []string
	_ = json.Unmarshal(body, &out)
	return out
}

// setOnline takes clusters offline or online and waits until the hub's
// view matches (the hub's rollout reads its sessions).
func (f *fleet) setOnline(t testing.TB, clusters []string, online bool) {
	t.Helper()
	path := "/v1/offline"
	if online {
		path = "/v1/online"
	}
	f.control_(t, path, map[string]any{"clusters": clusters})
	e2etest.Eventually(t, fmt.Sprintf("%d clusters online=%v", len(clusters), online), 2*time.Minute, func() (bool, string) {
		var cs []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		}
		if err := f.con.do("GET", "/v1/clusters", nil, &cs); err != nil {
			return false, err.Error()
		}
		want := map[string]bool{}
		for _, c := range clusters {
			want[c] = true
		}
		bad := 0
		for _, c := range cs {
			if want[c.Name] && (c.State == "Connected") != online {
				bad++
			}
		}
		return bad == 0, fmt.Sprintf("%d of %d not yet online=%v", bad, len(clusters), online)
	})
}

// pick returns the clusters the simulator's outage index would take down.
func (f *fleet) pick(t testing.TB, index int, fraction float64) []string {
	t.Helper()
	// Offline then online at once would flap; read the pick through a
	// no-op: online of already-online clusters.
	return f.control_(t, "/v1/online", map[string]any{"fraction": fraction, "index": index})
}

func (f *fleet) setFailure(t testing.TB, rate float64, chartVersion string) {
	t.Helper()
	f.control_(t, "/v1/failure", map[string]any{"failRate": rate, "failChartVersion": chartVersion})
}

// apply applies YAML through the CLI.
func (f *fleet) apply(t testing.TB, doc string) {
	t.Helper()
	out, errOut, code := f.bins.RunStdin(t, f.hub.Env, []byte(doc), "tether", "apply", "-f", "-")
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s%s\n%s", code, out, errOut, doc)
	}
}

// rollout reads a rollout's state through the API.
func (f *fleet) rollout(ns, name string) (*Record, error) {
	var r Record
	if err := f.con.do("GET", "/v1/rollouts/"+ns+"/"+name, nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// waitRollout polls the rollout until cond holds.
func (f *fleet) waitRollout(t testing.TB, ns, name, what string, timeout time.Duration, cond func(*Record) bool) *Record {
	t.Helper()
	var last *Record
	e2etest.Eventually(t, fmt.Sprintf("rollout %s/%s: %s", ns, name, what), timeout, func() (bool, string) {
		r, err := f.rollout(ns, name)
		if err != nil {
			return false, err.Error()
		}
		last = r
		return cond(r), fmt.Sprintf("revision %d phase %s (%s) counts %v", r.Revision, r.Phase, r.Reason, r.Counts())
	})
	return last
}

// pushCharts pushes a tiny chart "sim" at each version into the hub.
func (f *fleet) pushCharts(t testing.TB, versions ...string) {
	t.Helper()
	for _, v := range versions {
		dir := filepath.Join(t.TempDir(), "sim")
		if err := os.MkdirAll(filepath.Join(dir, "templates"), 0o755); err != nil {
			t.Fatal(err)
		}
		files := map[string]string{
			"Chart.yaml":          "apiVersion: v2\nname: sim\nversion: " + v + "\n",
			"values.yaml":         "{}\n",
			"templates/cm.yaml":   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: sim}\ndata: {v: \"" + v + "\"}\n",
			"templates/NOTES.txt": "simulated\n",
		}
		for n, c := range files {
			if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		f.bins.MustRun(t, f.hub.Env, "tether", "chart", "push", dir)
	}
}

// buildSimulator adds tether-fleetsim (without the race detector: the
// detector allows 8128 live goroutines, and 1,000 links need more) to
// bins.
func buildSimulator(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "tether-fleetsim"), "github.com/tetherfleet/tether/agent/cmd/tether-fleetsim").CombinedOutput()
	if err != nil {
		return fmt.Errorf("build tether-fleetsim: %v\n%s", err, out)
	}
	return nil
}
