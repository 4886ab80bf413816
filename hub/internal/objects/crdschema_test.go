package objects

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metavalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// crdSchemas is the oracle of the k0rdent corpus: the CustomResourceDefinitions
// k0rdent (kcm) and Flux (source-controller) install, copied verbatim
// into testdata/crds (see testdata/k0rdent/SOURCES.md), and the
// kube-apiserver's own code for custom resources (defaulting, pruning,
// OpenAPI schema, metadata and x-kubernetes-validations rules) from
// k8s.io/apiextensions-apiserver. It says what a management cluster with
// k0rdent installed would do with an object on create.
type crdSchemas struct {
	byGVK map[schema.GroupVersionKind]*crdVersion
}

type crdVersion struct {
	namespaced bool
	// status: the CRD has the status subresource, so a create drops the
	// object's status before validation (PrepareForCreate).
	status     bool
	structural *structuralschema.Structural
	validate   func(ctx context.Context, u *unstructured.Unstructured) []string
}

var loadCRDs = sync.OnceValues(func() (*crdSchemas, error) {
	files, err := filepath.Glob(filepath.Join("testdata", "crds", "*.yaml.gz"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no CRDs in testdata/crds: %v", err)
	}
	s := &crdSchemas{byGVK: map[schema.GroupVersionKind]*crdVersion{}}
	for _, f := range files {
		b, err := readGzip(f)
		if err != nil {
			return nil, err
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(b, &crd); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, v := range crd.Spec.Versions {
			// A file is the oracle of the one version its name gives:
			// kcm-v1alpha1-* come from the last kcm that served v1alpha1.
			if want := strings.Split(filepath.Base(f), "-")[1]; v.Name != want {
				continue
			}
			if !v.Served || v.Schema == nil {
				continue
			}
			gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind}
			cv, err := newCRDVersion(&crd, v, gvk)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", f, v.Name, err)
			}
			s.byGVK[gvk] = cv
		}
	}
	return s, nil
})

func readGzip(f string) ([]byte, error) {
	fh, err := os.Open(f)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	zr, err := gzip.NewReader(fh)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	return io.ReadAll(zr)
}

func newCRDVersion(crd *apiextensionsv1.CustomResourceDefinition, v apiextensionsv1.CustomResourceDefinitionVersion, gvk schema.GroupVersionKind) (*crdVersion, error) {
	var internal apiextensions.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
		return nil, err
	}
	st, err := structuralschema.NewStructural(&internal)
	if err != nil {
		return nil, err
	}
	val, _, err := apiservervalidation.NewSchemaValidator(&internal)
	if err != nil {
		return nil, err
	}
	namespaced := crd.Spec.Scope == apiextensionsv1.NamespaceScoped
	celValidator := cel.NewValidator(st, true, celconfig.PerCallLimit)
	// The steps of the kube-apiserver's custom resource strategy on
	// create (k8s.io/apiextensions-apiserver/pkg/registry/customresource:
	// customResourceStrategy.Validate), with the same packages.
	validate := func(ctx context.Context, u *unstructured.Unstructured) field.ErrorList {
		var errs field.ErrorList
		if u.GetKind() != gvk.Kind || u.GetAPIVersion() != gvk.GroupVersion().String() {
			return field.ErrorList{field.Invalid(field.NewPath("apiVersion"), u.GetAPIVersion(), "must be "+gvk.GroupVersion().String())}
		}
		md := &metav1.ObjectMeta{}
		if raw, ok := u.Object["metadata"].(map[string]any); ok {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, md); err != nil {
				return field.ErrorList{field.Invalid(field.NewPath("metadata"), raw, err.Error())}
			}
		}
		errs = append(errs, metavalidation.ValidateObjectMeta(md, namespaced, metavalidation.NameIsDNSSubdomain, field.NewPath("metadata"))...)
		errs = append(errs, apiservervalidation.ValidateCustomResource(nil, u.UnstructuredContent(), val)...)
		errs = append(errs, schemaobjectmeta.Validate(ctx, nil, u.Object, st, false)...)
		errs = append(errs, listtype.ValidateListSetsAndMaps(nil, st, u.Object)...)
		if celValidator != nil && !hasTypeErrors(errs) {
			cerrs, _ := celValidator.Validate(ctx, nil, st, u.Object, nil, celconfig.RuntimeCELCostBudget)
			errs = append(errs, cerrs...)
		}
		return errs
	}
	return &crdVersion{
		namespaced: namespaced,
		status:     v.Subresources != nil && v.Subresources.Status != nil,
		structural: st,
		validate: func(ctx context.Context, u *unstructured.Unstructured) []string {
			var out []string
			for _, e := range validate(ctx, u) {
				out = append(out, e.Error())
			}
			return out
		},
	}, nil
}

// hasTypeErrors: as the apiserver, CEL rules do not run on an object
// with a value of the wrong type.
func hasTypeErrors(errs field.ErrorList) bool {
	for _, e := range errs {
		if e.Type == field.ErrorTypeTypeInvalid {
			return true
		}
	}
	return false
}

// crdVerdict is what the management cluster would say on create.
type crdVerdict struct {
	// known: a CRD of testdata/crds serves the object's group, version
	// and kind, or it is a core ConfigMap or Secret.
	known bool
	// errs are the create's errors, each "path: reason". Unknown fields
	// are errors, as with kubectl's default (strict) field validation.
	errs []string
}

func (v crdVerdict) accepted() bool { return v.known && len(v.errs) == 0 }

// judge returns the verdict for one object (a decoded YAML document).
func (s *crdSchemas) judge(obj map[string]any) crdVerdict {
	u := &unstructured.Unstructured{Object: obj}
	gvk := u.GroupVersionKind()
	if gvk.Group == "" && gvk.Version == "v1" && (gvk.Kind == KindConfigMap || gvk.Kind == KindSecret) {
		return judgeCore(obj)
	}
	cv := s.byGVK[gvk]
	if cv == nil {
		return crdVerdict{}
	}
	u = u.DeepCopy()
	if u.GetNamespace() == "" && cv.namespaced {
		u.SetNamespace(DefaultNamespace) // kubectl's default namespace
	}
	// The order of a create: decoding defaults and prunes (strict field
	// validation reports what it prunes), then PrepareForCreate drops
	// the status, then the strategy validates.
	structuraldefaulting.Default(u.Object, cv.structural)
	unknown := pruning.PruneWithOptions(u.Object, cv.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	slices.Sort(unknown)
	v := crdVerdict{known: true}
	for _, p := range unknown {
		v.errs = append(v.errs, fmt.Sprintf("%s: unknown field", p))
	}
	if cv.status {
		delete(u.Object, "status")
	}
	v.errs = append(v.errs, cv.validate(context.Background(), u)...)
	return v
}

// judgeCore is the verdict for a core ConfigMap or Secret: it decodes
// strictly into k8s.io/api's type (unknown fields, base64 data) and its
// metadata and data keys are valid.
func judgeCore(obj map[string]any) crdVerdict {
	v := crdVerdict{known: true}
	b, err := json.Marshal(obj)
	if err != nil {
		v.errs = append(v.errs, err.Error())
		return v
	}
	var md *metav1.ObjectMeta
	var keys []string
	if obj["kind"] == KindSecret {
		var o corev1.Secret
		err = yaml.UnmarshalStrict(b, &o)
		md, keys = &o.ObjectMeta, append(slices.Collect(maps.Keys(o.Data)), slices.Collect(maps.Keys(o.StringData))...)
	} else {
		var o corev1.ConfigMap
		err = yaml.UnmarshalStrict(b, &o)
		md, keys = &o.ObjectMeta, append(slices.Collect(maps.Keys(o.Data)), slices.Collect(maps.Keys(o.BinaryData))...)
	}
	if err != nil {
		v.errs = append(v.errs, err.Error())
		return v
	}
	if md.Namespace == "" {
		md.Namespace = DefaultNamespace
	}
	for _, e := range metavalidation.ValidateObjectMeta(md, true, metavalidation.NameIsDNSSubdomain, field.NewPath("metadata")) {
		v.errs = append(v.errs, e.Error())
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, msg := range k8svalidation.IsConfigMapKey(k) {
			v.errs = append(v.errs, fmt.Sprintf("data[%s]: %s", k, msg))
		}
	}
	return v
}
