package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// KubernetesVersion is the version the e2e kube-apiserver is built from and
// reports.
const KubernetesVersion = "v1.37.2"

// Options configures a cluster. The zero value is a bare control plane:
// etcd and kube-apiserver only.
type Options struct {
	// Name labels logs and the kubeconfig context. Default "tether-e2e".
	Name string
	// BinDir holds the binaries from `make e2e-bins`; see [BinDir].
	BinDir string
	// Dir holds data, certificates, the kubeconfig and logs. Default: a new
	// temporary folder, removed by Stop. A given Dir is left in place.
	Dir string
	// Controllers also runs kube-controller-manager, kube-scheduler and
	// kwok, so Deployments get Pods that are scheduled and Running on
	// simulated nodes. Implied by Nodes and NodeCount.
	Controllers bool
	// Nodes are simulated (kwok) nodes to create.
	Nodes []NodeSpec
	// NodeCount adds that many nodes with default capacity after Nodes.
	NodeCount int
	// ResourceMetrics makes kwok simulate the kubelets' resource metrics
	// (/metrics/resource: node and container CPU and memory) with its
	// Metric and ClusterResourceUsage CRDs, reachable through the API
	// server's node proxy as a kubelet's are (see kwokmetrics.go). A pod's
	// usage is its kwok.x-k8s.io/usage-cpu and -memory annotations, else
	// 1m and 1Mi per container. Implies Controllers.
	ResourceMetrics bool
	// Management makes the cluster a Cluster API management cluster: CAPI
	// CRDs and webhooks installed, and the core, kubeadm bootstrap, kubeadm
	// control plane and CAPD (in-memory backend) managers running.
	Management bool
	// Logger receives progress; default discards.
	Logger *slog.Logger
	// StartTimeout bounds Launch. Default 3 minutes (5 with Management).
	StartTimeout time.Duration
}

func (o *Options) withDefaults() Options {
	out := *o
	if out.Name == "" {
		out.Name = "tether-e2e"
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if len(out.Nodes) > 0 || out.NodeCount > 0 || out.ResourceMetrics {
		out.Controllers = true
	}
	if out.StartTimeout == 0 {
		out.StartTimeout = 3 * time.Minute
		if out.Management {
			out.StartTimeout = 5 * time.Minute
		}
	}
	return out
}

// Validate reports options that cannot work.
func (o *Options) Validate() error {
	if o.NodeCount < 0 {
		return fmt.Errorf("cluster options: NodeCount %d is negative", o.NodeCount)
	}
	seen := map[string]bool{}
	for i, n := range o.Nodes {
		if err := n.validate(); err != nil {
			return fmt.Errorf("cluster options: Nodes[%d]: %w", i, err)
		}
		if n.Name != "" && seen[n.Name] {
			return fmt.Errorf("cluster options: Nodes[%d]: duplicate name %q", i, n.Name)
		}
		seen[n.Name] = true
	}
	return nil
}

// Cluster is a running cluster. Its fields are set by Launch and must not be
// changed.
type Cluster struct {
	Name string
	// Dir holds data, certificates, the kubeconfig and each component's
	// log (<component>.log).
	Dir string
	// Server is the kube-apiserver URL.
	Server string
	// KubeconfigPath is a kubeconfig file with admin (system:masters)
	// credentials; Kubeconfig is its content.
	KubeconfigPath string
	Kubeconfig     []byte
	// RESTConfig, Client and Clientset talk to the cluster as admin.
	RESTConfig *rest.Config
	Client     client.Client
	Clientset  *kubernetes.Clientset
	// Nodes are the simulated nodes that were created, by name.
	Nodes []string

	log       *slog.Logger
	removeDir bool
	ca        *certAuthority
	token     string
	binDir    string

	// capdLock is held while this management cluster runs (see lockCAPD).
	capdLock *os.File
	// kwokIP is the address kwok serves simulated kubelets on when
	// Options.ResourceMetrics is set ("" otherwise).
	kwokIP string

	mu       sync.Mutex
	procs    []*process // in start order
	stopped  bool
	stopOnce sync.Once
}

// Launch starts a cluster and waits until it is ready. On error nothing is
// left running.
func Launch(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	binDir, err := BinDir(o.BinDir)
	if err != nil {
		return nil, err
	}
	need := []string{binEtcd, binAPIServer}
	if o.Controllers {
		need = append(need, binControllerManager, binScheduler, binKwok, assetKwokStages)
	}
	if o.Management {
		need = append(need, binCAPI, binKubeadmBootstrap, binKubeadmCP, binCAPD, assetCAPIManifests)
	}
	if err := requireFiles(binDir, need...); err != nil {
		return nil, fmt.Errorf("launch cluster %s: %w", o.Name, err)
	}

	c := &Cluster{Name: o.Name, log: o.Logger.With("cluster", o.Name), binDir: binDir}
	if o.ResourceMetrics {
		if c.kwokIP, err = proxyableIP(); err != nil {
			return nil, fmt.Errorf("launch cluster %s: resource metrics: %w", o.Name, err)
		}
	}
	if o.Dir != "" {
		c.Dir, err = filepath.Abs(o.Dir)
		if err == nil {
			err = os.MkdirAll(c.Dir, 0o755)
		}
	} else {
		c.Dir, err = os.MkdirTemp("", "tether-cluster-"+sanitize(o.Name)+"-")
		c.removeDir = true
	}
	if err != nil {
		return nil, fmt.Errorf("launch cluster %s: create dir: %w", o.Name, err)
	}
	defer func() {
		if err != nil {
			if tails := c.LogTails(20); tails != "" {
				err = fmt.Errorf("%w\nlogs of the components that were running:\n%s", err, tails)
			}
			_ = c.Stop()
		}
	}()

	if o.Management {
		// Before the start timeout: waiting for another test's management
		// cluster is not a slow start.
		if c.capdLock, err = lockCAPD(ctx, c.log); err != nil {
			return nil, fmt.Errorf("launch cluster %s: %w", o.Name, err)
		}
	}
	ctx, cancel := context.WithTimeoutCause(ctx, o.StartTimeout,
		fmt.Errorf("cluster %s not ready within %s", o.Name, o.StartTimeout))
	defer cancel()

	start := time.Now()
	if err := c.startControlPlane(ctx); err != nil {
		return nil, fmt.Errorf("launch cluster %s: %w", o.Name, err)
	}
	c.log.Info("control plane ready", "server", c.Server, "elapsed", time.Since(start).Round(time.Millisecond))
	if o.Controllers {
		if err := c.startControllers(ctx); err != nil {
			return nil, fmt.Errorf("launch cluster %s: %w", o.Name, err)
		}
		if err := c.addNodes(ctx, o.Nodes, o.NodeCount); err != nil {
			return nil, fmt.Errorf("launch cluster %s: %w", o.Name, err)
		}
		c.log.Info("controllers and nodes ready", "nodes", len(c.Nodes), "elapsed", time.Since(start).Round(time.Millisecond))
	}
	if o.Management {
		if err := c.startManagement(ctx); err != nil {
			return nil, fmt.Errorf("launch cluster %s: %w", o.Name, err)
		}
		c.log.Info("cluster api ready", "elapsed", time.Since(start).Round(time.Millisecond))
	}
	return c, nil
}

// Stop terminates every component (SIGTERM to its process group, SIGKILL
// after a grace period), waits for them to exit and removes the temporary
// folder Launch created. It is idempotent and safe for concurrent use.
func (c *Cluster) Stop() error {
	var err error
	c.stopOnce.Do(func() {
		c.mu.Lock()
		procs := slices.Clone(c.procs)
		c.stopped = true
		c.mu.Unlock()
		// Clients of the apiserver first (in parallel), then the
		// apiserver, then etcd: an apiserver whose etcd is gone hangs in
		// its graceful shutdown instead of exiting.
		var clients, apiserver, store []*process
		for _, p := range procs {
			switch p.Name {
			case "kube-apiserver":
				apiserver = append(apiserver, p)
			case "etcd":
				store = append(store, p)
			default:
				clients = append(clients, p)
			}
		}
		for _, stage := range [][]*process{clients, apiserver, store} {
			var wg sync.WaitGroup
			for _, p := range stage {
				wg.Go(func() { p.stop(stopGrace) })
			}
			wg.Wait()
		}
		if c.removeDir {
			if rerr := os.RemoveAll(c.Dir); rerr != nil {
				err = fmt.Errorf("stop cluster %s: remove %s: %w", c.Name, c.Dir, rerr)
			}
		}
		if c.capdLock != nil {
			c.capdLock.Close() // releases the flock
		}
		c.log.Info("stopped", "components", len(procs))
	})
	return err
}

// Components lists the processes of the cluster in start order.
func (c *Cluster) Components() []Component {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Component, len(c.procs))
	for i, p := range c.procs {
		out[i] = p.Component
	}
	return out
}

// LogTails returns the last n lines of every component's log, one section
// per component.
func (c *Cluster) LogTails(n int) string {
	c.mu.Lock()
	procs := slices.Clone(c.procs)
	c.mu.Unlock()
	var b strings.Builder
	for _, p := range procs {
		fmt.Fprintf(&b, "==== %s %s (pid %d, %s) ====\n%s\n", c.Name, p.Name, p.PID, p.LogPath, p.tail(n))
	}
	return b.String()
}

// track records a started process so Stop ends it; a process started after
// Stop is ended at once.
func (c *Cluster) track(p *process) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		p.stop(0)
		return fmt.Errorf("cluster %s stopped while starting %s", c.Name, p.Name)
	}
	c.procs = append(c.procs, p)
	return nil
}

// run starts a component that needs no ports of its own, tracked for Stop.
func (c *Cluster) run(name, bin string, args []string, env ...string) (*process, error) {
	p, err := startProcess(c.log, c.Dir, name, filepath.Join(c.binDir, bin), args, env)
	if err != nil {
		return nil, err
	}
	if err := c.track(p); err != nil {
		return nil, err
	}
	return p, nil
}

// runWithPorts starts a component on nports fresh ports and waits for ready,
// retrying with other ports on a conflict.
func (c *Cluster) runWithPorts(ctx context.Context, name, bin string, nports int, args func(ports []int) []string, env []string, ready func(ctx context.Context, p *process, ports []int) error) ([]int, error) {
	var got []int
	p, err := startWithPorts(ctx, name, nports, func(ctx context.Context, ps []int) (*process, error) {
		p, err := startProcess(c.log, c.Dir, name, filepath.Join(c.binDir, bin), args(ps), env)
		if err != nil {
			return nil, err
		}
		if err := ready(ctx, p, ps); err != nil {
			return p, err
		}
		got = ps
		return p, nil
	})
	if err != nil {
		return nil, err
	}
	p.Ports = got
	if err := c.track(p); err != nil {
		return nil, err
	}
	return got, nil
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	var err error
	if c.ca, err = newCA(c.Name + "-ca"); err != nil {
		return err
	}
	pki := filepath.Join(c.Dir, "pki")
	certPath, keyPath, err := c.ca.issueServing(filepath.Join(pki, "apiserver"), "kube-apiserver",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
	if err != nil {
		return err
	}
	caPath := filepath.Join(pki, "ca.crt")
	saKey := filepath.Join(pki, "sa.key")
	tokenFile := filepath.Join(pki, "tokens.csv")
	c.token = randomToken()
	if err := writeFiles(map[string][]byte{
		caPath:    c.ca.certPEM,
		tokenFile: []byte(c.token + ",admin,admin-uid,system:masters\n"),
	}); err != nil {
		return err
	}
	if err := writeServiceAccountKey(saKey); err != nil {
		return err
	}

	// etcd: client and peer port.
	etcdPorts, err := c.runWithPorts(ctx, "etcd", binEtcd, 2, func(p []int) []string {
		client, peer := "http://"+hostPort(p[0]), "http://"+hostPort(p[1])
		return []string{
			"--name=etcd",
			"--data-dir=" + filepath.Join(c.Dir, "etcd-data"),
			"--listen-client-urls=" + client,
			"--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer,
			"--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=etcd=" + peer,
			"--unsafe-no-fsync", // throwaway data; fsync only slows tests
			"--log-level=warn",
		}
	}, nil, func(ctx context.Context, p *process, ports []int) error {
		url := "http://" + hostPort(ports[0]) + "/health"
		return waitFor(ctx, "etcd health at "+url, p, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
			body, err := httpGet(ctx, http.DefaultClient, url, "")
			return err == nil && strings.Contains(body, `"health":"true"`), err
		})
	})
	if err != nil {
		return err
	}

	pool := x509.NewCertPool()
	pool.AddCert(c.ca.cert)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	apiPorts, err := c.runWithPorts(ctx, "kube-apiserver", binAPIServer, 1, func(p []int) []string {
		return []string{
			"--etcd-servers=http://" + hostPort(etcdPorts[0]),
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			// The "kubernetes" Endpoints would point at loopback, which
			// validation rejects; nothing in a harness cluster needs them.
			"--endpoint-reconciler-type=none",
			"--secure-port=" + itoa(p[0]),
			"--cert-dir=" + filepath.Join(pki, "apiserver"),
			"--tls-cert-file=" + certPath,
			"--tls-private-key-file=" + keyPath,
			"--client-ca-file=" + caPath,
			"--token-auth-file=" + tokenFile,
			"--authorization-mode=RBAC",
			"--service-account-key-file=" + saKey,
			"--service-account-signing-key-file=" + saKey,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-cluster-ip-range=10.96.0.0/16",
			"--allow-privileged=true",
			"--enable-priority-and-fairness=false",
			"--profiling=false",
			// Simulated kubelets (ResourceMetrics) are reached by their
			// InternalIP; kwok's Hostname addresses do not resolve.
			"--kubelet-preferred-address-types=" + c.kubeletAddressTypes(),
		}
	}, nil, func(ctx context.Context, p *process, ports []int) error {
		url := "https://" + hostPort(ports[0]) + "/readyz"
		return waitFor(ctx, "kube-apiserver /readyz at "+url, p, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
			body, err := httpGet(ctx, hc, url, c.token)
			return err == nil && strings.TrimSpace(body) == "ok", err
		})
	})
	if err != nil {
		return err
	}
	c.Server = "https://" + hostPort(apiPorts[0])
	return c.writeKubeconfig()
}

func (c *Cluster) writeKubeconfig() error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[c.Name] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: c.ca.certPEM}
	cfg.AuthInfos["admin@"+c.Name] = &clientcmdapi.AuthInfo{Token: c.token}
	cfg.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: "admin@" + c.Name}
	cfg.CurrentContext = c.Name
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode kubeconfig: %w", err)
	}
	c.Kubeconfig = b
	c.KubeconfigPath = filepath.Join(c.Dir, "kubeconfig")
	if err := writeFiles(map[string][]byte{c.KubeconfigPath: b}); err != nil {
		return err
	}
	c.RESTConfig, err = clientcmd.RESTConfigFromKubeConfig(b)
	if err != nil {
		return fmt.Errorf("rest config from %s: %w", c.KubeconfigPath, err)
	}
	c.RESTConfig.QPS, c.RESTConfig.Burst = 100, 200
	if c.Clientset, err = kubernetes.NewForConfig(c.RESTConfig); err != nil {
		return fmt.Errorf("clientset for %s: %w", c.Server, err)
	}
	if c.Client, err = client.New(c.RESTConfig, client.Options{Scheme: newScheme()}); err != nil {
		return fmt.Errorf("controller-runtime client for %s: %w", c.Server, err)
	}
	return nil
}

func (c *Cluster) startControllers(ctx context.Context) error {
	pki := filepath.Join(c.Dir, "pki")
	if _, err := c.run("kube-controller-manager", binControllerManager, []string{
		"--kubeconfig=" + c.KubeconfigPath,
		"--leader-elect=false",
		"--secure-port=0",
		// nodeipam would need a pod CIDR per node; kwok nodes need none.
		"--controllers=*,-nodeipam",
		"--service-account-private-key-file=" + filepath.Join(pki, "sa.key"),
		"--root-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--use-service-account-credentials=false",
	}); err != nil {
		return err
	}
	if _, err := c.run("kube-scheduler", binScheduler, []string{
		"--kubeconfig=" + c.KubeconfigPath,
		"--leader-elect=false",
		"--secure-port=0",
	}); err != nil {
		return err
	}
	kwokArgs, kwokHealth, err := c.kwokServing(ctx)
	if err != nil {
		return err
	}
	if _, err := c.runWithPorts(ctx, "kwok", binKwok, 1, func(p []int) []string {
		return append([]string{
			"--kubeconfig=" + c.KubeconfigPath,
			"--manage-all-nodes=true",
			"--config=" + filepath.Join(c.binDir, assetKwokStages),
		}, kwokArgs(p[0])...)
	}, nil, func(ctx context.Context, p *process, ports []int) error {
		url, hc := kwokHealth(ports[0])
		return waitFor(ctx, "kwok /healthz at "+url, p, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
			_, err := httpGet(ctx, hc, url, "")
			return err == nil, err
		})
	}); err != nil {
		return err
	}
	if c.kwokIP != "" {
		if err := c.applyKwokMetrics(ctx); err != nil {
			return err
		}
	}
	// The ServiceAccount admission plugin rejects Pods until the
	// controller-manager has created the namespace's default
	// ServiceAccount; waiting for it also proves the controllers run.
	return waitFor(ctx, "serviceaccount default/default", c.procByName("kube-controller-manager"), 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		_, err := c.Clientset.CoreV1().ServiceAccounts("default").Get(ctx, "default", getOpts)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
}

func (c *Cluster) procByName(name string) *process {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// httpGet returns the body of a GET that answered 200.
func httpGet(ctx context.Context, hc *http.Client, url, token string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, s)
}
