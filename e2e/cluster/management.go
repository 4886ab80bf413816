package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ContractLabel is the label every provider CRD carries so Cluster API core
// knows which API version implements its v1beta2 contract. The upstream
// kustomize bases add it; the raw CRDs lack it.
const ContractLabel = "cluster.x-k8s.io/v1beta2"

// provider is one Cluster API manager and the manifests it owns, in the
// layout e2e/tools/build.sh writes under capi-manifests/.
type provider struct {
	name   string // folder under capi-manifests and webhook config prefix
	binary string
	env    []string
}

var providers = []provider{
	{name: "core", binary: binCAPI},
	{name: "bootstrap-kubeadm", binary: binKubeadmBootstrap},
	{name: "controlplane-kubeadm", binary: binKubeadmCP},
	// The in-memory backend serves each workload cluster's API on
	// POD_IP:20000-24000; without it the host is empty.
	{name: "infrastructure-docker", binary: binCAPD, env: []string{"POD_IP=127.0.0.1"}},
}

// capdLockFile serialises management clusters on one machine: CAPD's
// in-memory backend listens on fixed ports (its debug mux on :19000, the
// workload clusters' API servers from :20000), which its command line
// cannot change, so two at once fail with "address already in use"
// (`go test ./...` runs packages in parallel). Machine-wide, so tests of
// several checkouts wait for each other too.
var capdLockFile = filepath.Join(os.TempDir(), "tether-e2e-capd-inmemory.lock")

// lockCAPD takes the machine-wide CAPD lock, waiting while another
// management cluster holds it (or until ctx ends). Closing the file
// releases it; so does the process's death.
func lockCAPD(ctx context.Context, log *slog.Logger) (*os.File, error) {
	f, err := os.OpenFile(capdLockFile, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", capdLockFile, err)
	}
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", capdLockFile, err)
		}
		if !logged {
			log.Info("waiting for another management cluster to stop (CAPD in-memory uses fixed ports)", "lock", capdLockFile)
			logged = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for another management cluster (lock %s): %w", capdLockFile, context.Cause(ctx))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) startManagement(ctx context.Context) error {
	root := filepath.Join(c.binDir, assetCAPIManifests)
	if err := c.applyCRDs(ctx, root); err != nil {
		return err
	}
	// Managers start in parallel: each spends most of its start-up
	// waiting for informers to sync.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		errs  []error
		ports = map[string]int{}
	)
	for _, p := range providers {
		wg.Go(func() {
			port, err := c.startProvider(ctx, p)
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
			ports[p.name] = port
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, p := range providers {
		if err := c.registerWebhooks(ctx, filepath.Join(root, p.name, "webhooks.yaml"), p.name, ports[p.name]); err != nil {
			return err
		}
	}
	return nil
}

// applyCRDs applies every provider's CRDs with the contract label and waits
// until they are Established.
func (c *Cluster) applyCRDs(ctx context.Context, root string) error {
	var names []string
	for _, p := range providers {
		files, err := filepath.Glob(filepath.Join(root, p.name, "crd", "*.yaml"))
		if err != nil || len(files) == 0 {
			return fmt.Errorf("%w: no CRDs in %s", ErrBinariesMissing, filepath.Join(root, p.name, "crd"))
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("read CRD: %w", err)
			}
			objs, err := DecodeObjects(bytes.NewReader(b))
			if err != nil {
				return fmt.Errorf("CRD %s: %w", f, err)
			}
			for _, u := range objs {
				labels := u.GetLabels()
				if labels == nil {
					labels = map[string]string{}
				}
				labels[ContractLabel] = "v1beta2"
				u.SetLabels(labels)
				names = append(names, u.GetName())
			}
			if err := c.ApplyObjects(ctx, objs...); err != nil {
				return err
			}
		}
	}
	for _, name := range names {
		err := waitFor(ctx, "CRD "+name+" Established", nil, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
				return false, err
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// startProvider runs one manager with its own webhook serving certificate
// and returns its webhook port once /readyz answers.
func (c *Cluster) startProvider(ctx context.Context, p provider) (int, error) {
	certDir := filepath.Join(c.Dir, "pki", "webhook-"+p.name)
	if _, _, err := c.ca.issueServing(certDir, p.name+"-webhook"); err != nil {
		return 0, err
	}
	name := "capi-" + p.name
	ports, err := c.runWithPorts(ctx, name, p.binary, 3, func(ps []int) []string {
		return []string{
			"--kubeconfig=" + c.KubeconfigPath,
			"--leader-elect=false",
			"--webhook-cert-dir=" + certDir,
			// The webhook server binds all interfaces (upstream has no
			// host flag); the other two bind loopback.
			"--webhook-port=" + itoa(ps[0]),
			"--health-addr=" + hostPort(ps[1]),
			"--diagnostics-address=" + hostPort(ps[2]),
			"--insecure-diagnostics",
		}
	}, p.env, func(ctx context.Context, proc *process, ps []int) error {
		url := "http://" + hostPort(ps[1]) + "/readyz"
		return waitFor(ctx, name+" /readyz at "+url, proc, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
			_, err := httpGet(ctx, http.DefaultClient, url, "")
			return err == nil, err
		})
	})
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// registerWebhooks turns the provider's webhook manifests, which point at an
// in-cluster Service, into configurations that call the manager on
// https://127.0.0.1:port with the cluster CA.
func (c *Cluster) registerWebhooks(ctx context.Context, path, prefix string, port int) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: read webhook manifests: %w", ErrBinariesMissing, err)
	}
	objs, err := DecodeObjects(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("webhook manifests %s: %w", path, err)
	}
	base := "https://" + hostPort(port)
	for _, u := range objs {
		var obj client.Object
		switch u.GetKind() {
		case "MutatingWebhookConfiguration":
			var m admissionv1.MutatingWebhookConfiguration
			if err := fromUnstructured(u, &m); err != nil {
				return fmt.Errorf("webhook manifests %s: %w", path, err)
			}
			for i := range m.Webhooks {
				m.Webhooks[i].ClientConfig = clientConfig(base, m.Webhooks[i].ClientConfig, c.ca.certPEM)
			}
			obj = &m
		case "ValidatingWebhookConfiguration":
			var v admissionv1.ValidatingWebhookConfiguration
			if err := fromUnstructured(u, &v); err != nil {
				return fmt.Errorf("webhook manifests %s: %w", path, err)
			}
			for i := range v.Webhooks {
				v.Webhooks[i].ClientConfig = clientConfig(base, v.Webhooks[i].ClientConfig, c.ca.certPEM)
			}
			obj = &v
		default:
			return fmt.Errorf("webhook manifests %s: unexpected kind %s", path, u.GetKind())
		}
		obj.SetName(prefix + "-" + obj.GetName())
		if err := c.Client.Create(ctx, obj); err != nil {
			return fmt.Errorf("register %s %s: %w", u.GetKind(), obj.GetName(), err)
		}
	}
	return nil
}

func clientConfig(base string, in admissionv1.WebhookClientConfig, caPEM []byte) admissionv1.WebhookClientConfig {
	path := ""
	if in.Service != nil && in.Service.Path != nil {
		path = *in.Service.Path
	}
	url := base + "/" + strings.TrimPrefix(path, "/")
	return admissionv1.WebhookClientConfig{URL: &url, CABundle: caPEM}
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		return fmt.Errorf("convert %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}
