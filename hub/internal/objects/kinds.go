package objects

import (
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
)

// KindDef describes one object kind: everything the repository, the
// console API, the CLI and the desired-state compiler need to know about it.
// Register adds it to a Registry; nothing else has to change to add a kind
// (see docs/design/kinds.md). T is a pointer to the kind's struct, which
// embeds Header.
type KindDef[T Object] struct {
	// Kind is the kind's name, as in manifests: "ServiceTemplate".
	Kind string
	// New returns an empty object (its header is filled in by the registry).
	New func() T
	// APIVersion is what objects are stored and shown under.
	APIVersion string
	// Accepts lists further apiVersions input may carry (k0rdent's, Flux's);
	// they are stored as APIVersion.
	Accepts []string

	// Plural is the console's plural: "servicetemplates". Default: the
	// lower-case kind with an "s".
	Plural string
	// Short are short names listed in help: "st".
	Short []string
	// Aliases are further names the console accepts: "svctmpl". The
	// lower-case kind is always accepted.
	Aliases []string

	// ClusterScoped kinds have no namespace: a namespace in input is
	// dropped and lookups ignore the one given.
	ClusterScoped bool
	// SharedFromSystemNamespaces: a reference from any namespace resolves
	// in the referencing object's namespace, else in the first system
	// namespace that has one (ServiceTemplate).
	SharedFromSystemNamespaces bool
	// BuiltinNames exist without an object: a reference to one is never
	// "not found" (HelmRepository tether-local).
	BuiltinNames []string

	// Spec returns the part whose change bumps metadata.generation.
	Spec func(T) any
	// Status returns a pointer to the status the hub writes; nil for kinds
	// without one. Apply keeps the stored status; UpdateStatus changes it.
	// A status with a SetWarnings([]string) method gets the object's
	// warnings in API answers.
	Status func(T) any
	// Default fills in the kind's defaults (namespace and apiVersion are
	// done for every kind). It must be idempotent.
	Default func(T)
	// Validate checks the object on its own, with field paths from the
	// object's root ("spec.url"). Metadata is checked for every kind.
	Validate func(T) FieldErrors

	// References are the kinds Refs may name; a delete of one of them
	// looks at this kind's objects for users.
	References []string
	// Refs lists the objects o names. Apply refuses o if one does not
	// exist (in the batch or the store); Delete refuses to remove an
	// object something refers to.
	Refs func(T) []Ref

	// Warnings lists accepted fields that have no effect yet, one
	// sentence each starting with the field path.
	Warnings func(T) []string

	// Columns are the console table's columns after NAMESPACE and NAME;
	// wide ones (shown with -o wide) come last. None: an AGE column.
	Columns []Column[T]
	// Describe returns sections `tether describe` prints after the object.
	Describe func(T) []Section
	// Redact hides credentials from viewers, in place, writing marker
	// instead, and names what it hid. Nil: the kind holds none.
	Redact func(o T, marker string) (hidden []string)

	// ServiceSpec returns the services the object deploys, for kinds that
	// deploy services; their status must be *ServicesStatus.
	ServiceSpec func(T) *ServiceSpec
	// Cluster returns the one cluster a service-deploying object targets
	// (ClusterDeployment: its own name); nil when it selects clusters.
	Cluster func(T) string

	// CompileInput: a change to the kind recompiles desired state.
	CompileInput bool
	// StatusIsCompileInput: the compiler reads the kind's status too, so a
	// status write recompiles (ServiceTemplate's resolved chart).
	StatusIsCompileInput bool
}

// Ref is one reference from an object to another.
type Ref struct {
	// Kind and Name name the referenced object, which is looked up in the
	// referencing object's namespace (see SharedFromSystemNamespaces).
	Kind, Name string
	// Field is the path of the reference, for apply errors:
	// "spec.helm.chartSpec.sourceRef.name".
	Field string
	// Use, when set, is shown after the user in in-use errors:
	// "ClusterDeployment acme/edge-1 (services[0])".
	Use string
}

// Column is one console table column.
type Column[T Object] struct {
	Header string
	// Wide columns are shown only with -o wide.
	Wide bool
	// Value is the cell; Age, when set instead, is a time the console
	// shows as an age ("3d"), "<unknown>" when nil.
	Value func(T) string
	Age   func(T) *time.Time
}

// AgeColumn is the AGE column: time since creation.
func AgeColumn[T Object]() Column[T] {
	return Column[T]{Header: "AGE", Age: func(o T) *time.Time { return o.GetHeader().Metadata.CreationTimestamp }}
}

// Section is one titled part of `tether describe` output.
type Section struct {
	Title string
	Items []Item
}

// Item is one line of a Section.
type Item struct{ Key, Value string }

// Kind is a registered kind; methods take any Object of the kind (the
// registry looks it up by header kind, so a caller never type-switches).
type Kind struct {
	name, apiVersion, plural string
	accepts, short, aliases  []string
	clusterScoped, shared    bool
	builtin                  []string
	references               []string
	compileInput, statusIn   bool
	typ                      reflect.Type // the struct type

	newObj      func() Object
	spec        func(Object) any
	status      func(Object) any
	defaults    func(Object)
	validate    func(Object) FieldErrors
	refs        func(Object) []Ref
	warnings    func(Object) []string
	columns     []TableColumn
	describe    func(Object) []Section
	redact      func(Object, string) []string
	serviceSpec func(Object) *ServiceSpec
	cluster     func(Object) string
}

// TableColumn is a Column of a registered kind.
type TableColumn struct {
	Header string
	Wide   bool
	Value  func(Object) string
	Age    func(Object) *time.Time
}

// Name is the kind, as in manifests.
func (k *Kind) Name() string { return k.name }

// APIVersion is the version objects of the kind are stored under.
func (k *Kind) APIVersion() string { return k.apiVersion }

// Plural is the console's plural name.
func (k *Kind) Plural() string { return k.plural }

// Short are the kind's short names.
func (k *Kind) Short() []string { return slices.Clone(k.short) }

// Namespaced reports whether objects of the kind live in a namespace.
func (k *Kind) Namespaced() bool { return !k.clusterScoped }

// Columns are the kind's console table columns after NAMESPACE and NAME.
func (k *Kind) Columns() []TableColumn { return slices.Clone(k.columns) }

// Describe returns the sections describe prints after the object; none
// for kinds that register none.
func (k *Kind) Describe(o Object) []Section {
	if k.describe == nil {
		return nil
	}
	return k.describe(o)
}

// Redacts reports whether the kind holds credentials viewers may not see.
func (k *Kind) Redacts() bool { return k.redact != nil }

// Redact hides o's credentials, writing marker instead, and names what it
// hid.
func (k *Kind) Redact(o Object, marker string) []string {
	if k.redact == nil {
		return nil
	}
	return k.redact(o, marker)
}

// Services returns the serviceSpec and status of an object of a kind that
// deploys services; nil, nil for other kinds.
func (k *Kind) Services(o Object) (*ServiceSpec, *ServicesStatus) {
	if k.serviceSpec == nil {
		return nil, nil
	}
	var st *ServicesStatus
	if h, ok := k.statusOf(o).(servicesStatusHolder); ok {
		st = h.servicesStatus()
	}
	return k.serviceSpec(o), st
}

// servicesStatusHolder is a status that is, or embeds, a ServicesStatus
// (ClusterDeploymentStatus adds provisioning fields).
type servicesStatusHolder interface{ servicesStatus() *ServicesStatus }

func (s *ServicesStatus) servicesStatus() *ServicesStatus { return s }

// Cluster returns the one cluster o targets, if its kind targets one.
func (k *Kind) Cluster(o Object) (string, bool) {
	if k.cluster == nil {
		return "", false
	}
	return k.cluster(o), true
}

func (k *Kind) statusOf(o Object) any {
	if k.status == nil {
		return nil
	}
	return k.status(o)
}

// clearStatus zeroes o's status.
func (k *Kind) clearStatus(o Object) {
	if p := k.statusOf(o); p != nil {
		v := reflect.ValueOf(p).Elem()
		v.Set(reflect.Zero(v.Type()))
	}
}

// copyStatus sets dst's status to src's.
func (k *Kind) copyStatus(dst, src Object) {
	d, s := k.statusOf(dst), k.statusOf(src)
	if d != nil && s != nil && reflect.TypeOf(d) == reflect.TypeOf(s) {
		reflect.ValueOf(d).Elem().Set(reflect.ValueOf(s).Elem())
	}
}

// Registry is a set of kinds. Build one with NewRegistry and Register, or
// take DefaultKinds; register every kind before using the registry (it is
// not safe to register concurrently with use).
type Registry struct {
	kinds   []*Kind
	byName  map[string]*Kind // kind -> Kind
	byAlias map[string]*Kind // every lower-case console name -> Kind
	byType  map[reflect.Type]*Kind
	refused map[string]refusal
}

type refusal struct{ apiVersionPrefix, reason string }

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byName: map[string]*Kind{}, byAlias: map[string]*Kind{}, byType: map[reflect.Type]*Kind{}, refused: map[string]refusal{}}
}

// builtinKinds is the read-only registry behind the package-level
// functions (Decode, New, ...).
var builtinKinds = sync.OnceValue(DefaultKinds)

// Register adds a kind to r. It fails if the definition is incomplete or
// a name is taken.
func Register[T Object](r *Registry, d KindDef[T]) error {
	switch {
	case d.Kind == "":
		return errors.New("register kind: Kind is required")
	case d.New == nil, d.Spec == nil:
		return fmt.Errorf("register kind %s: New and Spec are required", d.Kind)
	case d.APIVersion == "":
		return fmt.Errorf("register kind %s: APIVersion is required", d.Kind)
	case r.byName[d.Kind] != nil:
		return fmt.Errorf("register kind %s: already registered", d.Kind)
	}
	typ := reflect.TypeOf(d.New())
	if typ.Kind() != reflect.Pointer || typ.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("register kind %s: New must return a pointer to a struct, not %s", d.Kind, typ)
	}
	wide := false
	for _, c := range d.Columns {
		if !c.Wide && wide {
			return fmt.Errorf("register kind %s: column %s: wide columns must come last", d.Kind, c.Header)
		}
		if (c.Value == nil) == (c.Age == nil) {
			return fmt.Errorf("register kind %s: column %s: set one of Value and Age", d.Kind, c.Header)
		}
		wide = c.Wide
	}
	if d.ServiceSpec != nil {
		if _, ok := callAny(d.Status, d.New()).(servicesStatusHolder); !ok {
			return fmt.Errorf("register kind %s: a kind with ServiceSpec needs a *ServicesStatus status", d.Kind)
		}
	}
	k := &Kind{
		name: d.Kind, apiVersion: d.APIVersion, plural: cmp.Or(d.Plural, strings.ToLower(d.Kind)+"s"),
		accepts: slices.Clone(d.Accepts), short: slices.Clone(d.Short), aliases: slices.Clone(d.Aliases),
		clusterScoped: d.ClusterScoped, shared: d.SharedFromSystemNamespaces, builtin: slices.Clone(d.BuiltinNames),
		references: slices.Clone(d.References), compileInput: d.CompileInput, statusIn: d.StatusIsCompileInput,
		typ: typ.Elem(),
	}
	names := append([]string{k.plural, strings.ToLower(k.name)}, append(k.short, k.aliases...)...)
	for _, n := range names {
		if other := r.byAlias[strings.ToLower(n)]; other != nil {
			return fmt.Errorf("register kind %s: name %q is taken by %s", d.Kind, strings.ToLower(n), other.name)
		}
	}
	k.newObj = func() Object { return d.New() }
	k.spec = erase(d.Spec)
	k.status = erase(d.Status)
	k.defaults = eraseDo(d.Default)
	k.validate = erase(d.Validate)
	k.refs = erase(d.Refs)
	k.warnings = erase(d.Warnings)
	k.describe = erase(d.Describe)
	k.serviceSpec = erase(d.ServiceSpec)
	k.cluster = erase(d.Cluster)
	if d.Redact != nil {
		k.redact = func(o Object, marker string) []string { return d.Redact(o.(T), marker) }
	}
	cols := d.Columns
	if len(cols) == 0 {
		cols = []Column[T]{AgeColumn[T]()}
	}
	for _, c := range cols {
		k.columns = append(k.columns, TableColumn{Header: c.Header, Wide: c.Wide, Value: erase(c.Value), Age: erase(c.Age)})
	}
	r.kinds = append(r.kinds, k)
	r.byName[k.name] = k
	for _, n := range names {
		r.byAlias[strings.ToLower(n)] = k
	}
	if _, dup := r.byType[typ]; dup {
		r.byType[typ] = nil // shared by two kinds: only the header tells
	} else {
		r.byType[typ] = k
	}
	return nil
}

// MustRegister is Register that panics on error, for registrations that
// are fixed at compile time (DefaultKinds, tests).
func MustRegister[T Object](r *Registry, d KindDef[T]) {
	if err := Register(r, d); err != nil {
		panic(err)
	}
}

// erase turns a typed function into one over Object (nil stays nil).
func erase[T Object, R any](f func(T) R) func(Object) R {
	if f == nil {
		return nil
	}
	return func(o Object) R { return f(o.(T)) }
}

func eraseDo[T Object](f func(T)) func(Object) {
	if f == nil {
		return nil
	}
	return func(o Object) { f(o.(T)) }
}

func callAny[T Object](f func(T) any, o T) any {
	if f == nil {
		return nil
	}
	return f(o)
}

// Refuse makes Decode refuse kind, when its apiVersion starts with
// apiVersionPrefix, with `unknown kind: KIND REASON` instead of the
// generic unknown-kind error.
func (r *Registry) Refuse(kind, apiVersionPrefix, reason string) {
	r.refused[kind] = refusal{apiVersionPrefix, reason}
}

// Get returns the kind named exactly kind, or nil.
func (r *Registry) Get(kind string) *Kind { return r.byName[kind] }

// KindOf returns the kind of o: the one its header names, else the one
// registered for its Go type (an object built in code without a kind in
// its header); nil if neither is registered.
func (r *Registry) KindOf(o Object) *Kind {
	if k := r.byName[o.GetHeader().Kind]; k != nil {
		return k
	}
	return r.byType[reflect.TypeOf(o)]
}

// Lookup finds a kind by any of its console names, case-insensitively:
// kind, plural, short names, aliases.
func (r *Registry) Lookup(name string) *Kind { return r.byAlias[strings.ToLower(name)] }

// Kinds returns the registered kinds in registration order.
func (r *Registry) Kinds() []*Kind { return slices.Clone(r.kinds) }

// Names returns the kind names with referenced kinds before the kinds that
// reference them (then in registration order).
func (r *Registry) Names() []string {
	depth := map[string]int{}
	var visit func(k *Kind, seen map[string]bool) int
	visit = func(k *Kind, seen map[string]bool) int {
		if d, ok := depth[k.name]; ok {
			return d
		}
		if seen[k.name] {
			return 0 // a cycle: order within it is registration order
		}
		seen[k.name] = true
		d := 0
		for _, ref := range k.references {
			if rk := r.byName[ref]; rk != nil {
				d = max(d, visit(rk, seen)+1)
			}
		}
		depth[k.name] = d
		return d
	}
	ks := r.Kinds()
	for _, k := range ks {
		visit(k, map[string]bool{})
	}
	slices.SortStableFunc(ks, func(a, b *Kind) int { return cmp.Compare(depth[a.name], depth[b.name]) })
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.name
	}
	return out
}

// CompileInputs returns the kinds whose changes recompile desired state.
func (r *Registry) CompileInputs() []string {
	var out []string
	for _, k := range r.kinds {
		if k.compileInput {
			out = append(out, k.name)
		}
	}
	return out
}

// StatusIsCompileInput reports whether the compiler reads kind's status.
func (r *Registry) StatusIsCompileInput(kind string) bool {
	k := r.byName[kind]
	return k != nil && k.statusIn
}

// New returns an empty object of kind with its header set, or nil for an
// unknown kind.
func (r *Registry) New(kind string) Object {
	k := r.byName[kind]
	if k == nil {
		return nil
	}
	o := k.newObj()
	h := o.GetHeader()
	h.Kind, h.APIVersion = kind, k.apiVersion
	return o
}

// sortedNames returns the kind names sorted, for error messages.
func (r *Registry) sortedNames() []string {
	names := make([]string, 0, len(r.kinds))
	for _, k := range r.kinds {
		names = append(names, k.name)
	}
	slices.Sort(names)
	return names
}

// acceptedVersions lists the apiVersions input of k may carry.
func (k *Kind) acceptedVersions() []string {
	return append([]string{k.apiVersion}, k.accepts...)
}

// namespaceFor returns the namespace an object of k given namespace ns
// lives in: none for cluster-scoped kinds, "default" for "".
func (k *Kind) namespaceFor(ns string) string {
	switch {
	case k.clusterScoped:
		return ""
	case ns == "":
		return DefaultNamespace
	}
	return ns
}
