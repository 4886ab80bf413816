// Package objects defines Tether's declarative API objects (HelmRepository,
// ServiceTemplate, ClusterDeployment, MultiClusterService, hub-side
// ConfigMap and Secret, and the k0rdent and Flux kinds their manifests
// use), decodes them from YAML or JSON, defaults and validates them, and
// stores them in the hub store (Repo).
//
// # Representation
//
// Each kind is a typed struct embedding Header (apiVersion, kind,
// metadata), with typed Spec and Status. Shapes follow k0rdent, whose
// apiVersions (k0rdent.mirantis.com/v1alpha1, v1beta1) are accepted and
// stored as tether.dev/v1alpha1. Every built-in kind is namespaced; an
// empty namespace means "default". References (serviceSpec template,
// valuesFrom, sourceRef) are resolved in the referencing object's
// namespace.
//
// # Kinds
//
// A kind is one registration (KindDef, Register) in a Registry: its type,
// apiVersions, defaulting, validation, references, status, warnings,
// console columns and names, describe sections and redaction. Decode,
// Repo, the console API and the CLI read everything kind-specific from the
// Registry they are given; DefaultKinds has the built-in kinds (Tether's,
// k0rdent's and Flux's, and the refusal of k0rdent's internal kinds). See
// docs/design/kinds.md.
//
// # Decoding
//
// Decode is strict: an unknown field, a value of the wrong type (a YAML
// number where a string is wanted, say) or a duplicate key is an error with
// its field path. Errors name source, document, kind, namespace/name and
// field: `web.yaml: document 2 (ServiceTemplate acme/nginx):
// spec.helm.chartSpec.version: required`. Input is bounded (MaxInputBytes,
// MaxDocuments).
//
// # Storage
//
// Objects are stored as JSON under (kind, namespace, name). The store's
// resourceVersion and creation revision are not part of the value; they
// are filled in on read. metadata.generation grows only when the spec (for
// ConfigMap and Secret: data) changes. Status is written only through
// Repo.UpdateStatus; Apply keeps the stored status.
package objects
