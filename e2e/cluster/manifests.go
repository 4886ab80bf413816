package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FieldOwner is the server-side apply field manager of the harness.
const FieldOwner = client.FieldOwner("tether-e2e")

// newScheme knows the built-in kinds, CRDs and the Cluster API core kinds.
// Other kinds (KubeadmControlPlane, CAPD's DevCluster) go through
// unstructured, which keeps kubeadm's dependencies out of the main module.
func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme,
		apiextensionsv1.AddToScheme,
		clusterv1.AddToScheme,
	} {
		// AddToScheme only fails on conflicting registrations, which
		// would be a programming error in this list.
		if err := add(s); err != nil {
			panic(fmt.Sprintf("build e2e scheme: %v", err))
		}
	}
	return s
}

// DecodeObjects parses a multi-document YAML or JSON stream into objects.
// Empty documents are skipped.
func DecodeObjects(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var out []*unstructured.Unstructured
	for i := 0; ; i++ {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("decode document %d: %w", i, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("decode document %d: missing kind or apiVersion", i)
		}
		out = append(out, u)
	}
}

// Apply server-side applies every object in the YAML stream, forcing
// ownership of conflicting fields.
func (c *Cluster) Apply(ctx context.Context, manifests []byte) error {
	objs, err := DecodeObjects(bytes.NewReader(manifests))
	if err != nil {
		return fmt.Errorf("apply to %s: %w", c.Name, err)
	}
	return c.ApplyObjects(ctx, objs...)
}

// ApplyObjects server-side applies the objects in order.
func (c *Cluster) ApplyObjects(ctx context.Context, objs ...*unstructured.Unstructured) error {
	for _, u := range objs {
		if err := c.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), FieldOwner, client.ForceOwnership); err != nil {
			return fmt.Errorf("apply %s %s/%s to %s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), c.Name, err)
		}
	}
	return nil
}

// ApplyFile server-side applies a YAML file.
func (c *Cluster) ApplyFile(ctx context.Context, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("apply to %s: %w", c.Name, err)
	}
	if err := c.Apply(ctx, b); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
