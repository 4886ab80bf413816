package objects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/hub/internal/store"
)

// Decoding limits: input beyond them is refused before any parsing.
const (
	MaxInputBytes = 8 << 20
	MaxDocuments  = 1000
	// maxReported bounds how many bad documents one error lists.
	maxReported = 20
)

// Errors; match with errors.Is. The wrapping error names source, document,
// object and field.
var (
	// ErrInvalid: input that does not decode or validate. Nothing was stored.
	ErrInvalid = errors.New("invalid object")
	// ErrNotFound: no such object (the store's error, so either matches).
	ErrNotFound = store.ErrNotFound
	// ErrInUse: the object is referenced by others and cannot be deleted.
	ErrInUse = errors.New("in use")
	// ErrUnknownKind: a kind this package does not know.
	ErrUnknownKind = errors.New("unknown kind")
)

// FieldError is one problem at a field path such as
// "spec.serviceSpec.services[1].dependsOn[0]".
type FieldError struct {
	Path   string
	Reason string
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

// FieldErrors is a list of field problems in one object.
type FieldErrors []FieldError

func (l *FieldErrors) add(p path, format string, args ...any) {
	l.Add(string(p), format, args...)
}

// Add appends a problem at field path p (such as "spec.url"); a kind's
// Validate uses it.
func (l *FieldErrors) Add(p string, format string, args ...any) {
	*l = append(*l, FieldError{Path: p, Reason: fmt.Sprintf(format, args...)})
}

// ObjectError is a problem with one object: where it came from and what is
// wrong with which fields. It wraps ErrInvalid (or ErrUnknownKind, or the
// error in Err).
type ObjectError struct {
	Source   string // file name, "-", "request"; may be empty
	Document int    // 1-based document index in Source; 0 when not decoded
	Item     int    // 1-based item index inside a List or JSON array; 0 if none
	Kind     string
	Key      string // namespace/name, may be empty
	Fields   FieldErrors
	Err      error // cause when not a field problem
}

func (e *ObjectError) prefix() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
		b.WriteString(": ")
	}
	if e.Document > 0 {
		fmt.Fprintf(&b, "document %d", e.Document)
		if e.Item > 0 {
			fmt.Fprintf(&b, " item %d", e.Item)
		}
		if e.Kind != "" {
			b.WriteString(" (" + e.Kind)
			if e.Key != "" {
				b.WriteString(" " + e.Key)
			}
			b.WriteString(")")
		}
	} else if e.Kind != "" {
		b.WriteString(e.Kind)
		if e.Key != "" {
			b.WriteString(" " + e.Key)
		}
	}
	return b.String()
}

// Error lists one line per field problem, each with the full prefix, e.g.
// `web.yaml: document 2 (ServiceTemplate acme/nginx): spec.helm.chartSpec.version: required`.
func (e *ObjectError) Error() string {
	p := e.prefix()
	var lines []string
	if e.Err != nil {
		lines = append(lines, p+": "+e.Err.Error())
	}
	for _, f := range e.Fields {
		lines = append(lines, p+": "+f.Error())
	}
	if len(lines) == 0 {
		return p + ": invalid"
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns ErrInvalid and the cause, if any.
func (e *ObjectError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalid, e.Err}
	}
	return []error{ErrInvalid}
}

// Decode parses one or more objects from YAML (documents separated by
// "---" lines) or JSON (an object, or an array of objects); a document of
// kind List (apiVersion v1) contributes its items. Decoding is strict:
// unknown fields, wrong types and duplicate keys are errors. Decoded
// objects are defaulted and validated (Default, Validate); cross-object
// references are checked by Repo.Apply. Errors name source, document index,
// kind, namespace/name and field path; every bad document is reported (up
// to 20) and no object is returned if any is bad.
func Decode(data []byte, source string) ([]Object, error) {
	return builtinKinds().Decode(data, source)
}

// Decode is the package's Decode for the kinds of r.
func (r *Registry) Decode(data []byte, source string) ([]Object, error) {
	if len(data) > MaxInputBytes {
		return nil, &ObjectError{Source: source, Err: fmt.Errorf("input is %d bytes, more than the limit of %d", len(data), MaxInputBytes)}
	}
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, &ObjectError{Source: source, Err: err}
	}
	var (
		out  []Object
		errs []error
		seen = map[string]int{}
	)
	for _, d := range docs {
		if len(errs) >= maxReported {
			errs = append(errs, fmt.Errorf("%s: further errors not shown", source))
			break
		}
		items, err := documentItems(d.text, d.line)
		if err != nil {
			errs = append(errs, &ObjectError{Source: source, Document: d.index, Err: err})
			continue
		}
		for i, raw := range items {
			item := 0
			if len(items) > 1 || d.list {
				item = i + 1
			}
			o, err := r.decodeItem(raw)
			if err != nil {
				err.Source, err.Document, err.Item = source, d.index, item
				errs = append(errs, err)
				continue
			}
			h := o.GetHeader()
			k := h.Key()
			if prev, dup := seen[k]; dup {
				errs = append(errs, &ObjectError{Source: source, Document: d.index, Item: item, Kind: h.Kind, Key: h.nsName(),
					Err: fmt.Errorf("duplicate of document %d", prev)})
				continue
			}
			seen[k] = d.index
			out = append(out, o)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

type document struct {
	index int // 1-based
	line  int // 1-based line of the document's first line
	text  []byte
	list  bool
}

// splitDocuments splits a YAML stream at lines that are "---" (optionally
// followed by a comment). Empty documents are dropped but keep their index.
func splitDocuments(data []byte) ([]document, error) {
	var docs []document
	index, start, startLine, line := 1, 0, 1, 1
	flush := func(end int) error {
		text := data[start:end]
		if !isBlankYAML(text) {
			if len(docs) >= MaxDocuments {
				return fmt.Errorf("more than %d documents", MaxDocuments)
			}
			docs = append(docs, document{index: index, line: startLine, text: text})
		}
		return nil
	}
	for pos := 0; pos < len(data); {
		end := bytes.IndexByte(data[pos:], '\n')
		next := len(data)
		if end >= 0 {
			next = pos + end + 1
		}
		l := bytes.TrimRight(data[pos:next], "\r\n")
		if isSeparator(l) {
			if pos > 0 || !isBlankYAML(data[start:pos]) {
				if err := flush(pos); err != nil {
					return nil, err
				}
				index++
			}
			start, startLine = next, line+1
		}
		pos = next
		line++
	}
	if err := flush(len(data)); err != nil {
		return nil, err
	}
	return docs, nil
}

func isSeparator(l []byte) bool {
	if !bytes.HasPrefix(l, []byte("---")) {
		return false
	}
	rest := bytes.TrimSpace(l[3:])
	return len(rest) == 0 || rest[0] == '#'
}

func isBlankYAML(b []byte) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		l = bytes.TrimSpace(l)
		if len(l) > 0 && l[0] != '#' {
			return false
		}
	}
	return true
}

var lineRE = regexp.MustCompile(`line (\d+)`)

// documentItems converts one document to JSON and returns its objects.
func documentItems(text []byte, firstLine int) ([]map[string]any, error) {
	j, err := yaml.YAMLToJSONStrict(text)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
		// Report file lines, not document lines.
		msg = lineRE.ReplaceAllStringFunc(msg, func(s string) string {
			n, _ := strconv.Atoi(s[len("line "):])
			return "line " + strconv.Itoa(n+firstLine-1)
		})
		return nil, errors.New(msg)
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case nil:
		return nil, nil
	case []any:
		return asObjects(v)
	case map[string]any:
		if v["kind"] == "List" {
			items, ok := v["items"].([]any)
			if !ok && v["items"] != nil {
				return nil, errors.New("items: expected a list")
			}
			return asObjects(items)
		}
		return []map[string]any{v}, nil
	}
	return nil, fmt.Errorf("expected an object, got %s", jsonType(v))
}

func asObjects(items []any) ([]map[string]any, error) {
	if len(items) > MaxDocuments {
		return nil, fmt.Errorf("more than %d items", MaxDocuments)
	}
	out := make([]map[string]any, 0, len(items))
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("items[%d]: expected an object, got %s", i, jsonType(it))
		}
		out = append(out, m)
	}
	return out, nil
}

// decodeItem turns one generic object into a typed, defaulted, validated
// Object.
func (r *Registry) decodeItem(m map[string]any) (Object, *ObjectError) {
	kind, _ := m["kind"].(string)
	apiVersion, _ := m["apiVersion"].(string)
	oe := &ObjectError{Kind: kind}
	k := r.Get(kind)
	if md, ok := m["metadata"].(map[string]any); ok {
		name, _ := md["name"].(string)
		ns, _ := md["namespace"].(string)
		_, refused := r.refused[kind]
		switch {
		case k != nil:
			ns = k.namespaceFor(ns)
		case ns == "" && !refused: // a refused kind may be cluster-scoped in k0rdent
			ns = DefaultNamespace
		}
		if name != "" {
			oe.Key = (&Header{Metadata: Metadata{Namespace: ns, Name: name}}).nsName()
		}
	}
	if kind == "" {
		oe.Fields.add("kind", "required")
		return nil, oe
	}
	if ref, refused := r.refused[kind]; k == nil && refused && strings.HasPrefix(apiVersion, ref.apiVersionPrefix) {
		oe.Err = fmt.Errorf("%w: %s %s", ErrUnknownKind, kind, ref.reason)
		return nil, oe
	}
	if k == nil {
		oe.Kind = "" // the message names it
		oe.Err = fmt.Errorf("%w %q (known: %s)", ErrUnknownKind, kind, strings.Join(r.sortedNames(), ", "))
		return nil, oe
	}
	if !slices.Contains(k.acceptedVersions(), apiVersion) {
		oe.Fields.add("apiVersion", "%q is not accepted for %s (want %s)", apiVersion, kind, strings.Join(k.acceptedVersions(), " or "))
		return nil, oe
	}
	if _, has := m["status"]; has && k.apiVersion != CoreAPIVersion {
		// Only the hub writes status: a status in input (a copy of
		// `kubectl get -o yaml`, or of Tether's own output) is dropped,
		// as Kubernetes drops it on create.
		m = maps.Clone(m)
		delete(m, "status")
	}
	o := r.New(kind)
	checkValue(m, k.typ, "", &oe.Fields)
	if len(oe.Fields) > 0 {
		return nil, oe
	}
	b, err := json.Marshal(m)
	if err == nil {
		err = json.Unmarshal(b, o)
	}
	if err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			oe.Fields.add(path(te.Field), "expected %s, got %s", te.Type, te.Value)
		} else {
			oe.Err = err
		}
		return nil, oe
	}
	r.Default(o)
	if fe := r.validate(o); len(fe) > 0 {
		oe.Fields = fe
		oe.Key = o.GetHeader().nsName()
		return nil, oe
	}
	return o, nil
}

// ---- strict structural check ----

type path string

func (p path) child(name string) path {
	if p == "" {
		return path(name)
	}
	return p + "." + path(name)
}

func (p path) index(i int) path { return p + path("["+strconv.Itoa(i)+"]") }

func (p path) key(k string) path { return p + path("["+k+"]") }

var (
	valuesType   = reflect.TypeFor[Values]()
	revisionType = reflect.TypeFor[Revision]()
	timeType     = reflect.TypeFor[time.Time]()
	rawType      = reflect.TypeFor[json.RawMessage]()
	ruleExprType = reflect.TypeFor[RuleExpr]()
	// dependsOnType takes names or k0rdent v1beta1's {name, namespace}.
	dependsOnType    = reflect.TypeFor[DependsOnList]()
	dependsOnRefType = reflect.TypeFor[struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}]()
	fieldCache sync.Map // reflect.Type -> map[string]reflect.Type
)

// jsonFields returns a struct's JSON field names and types, following
// embedded structs the way encoding/json does (for the shapes used here).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				fields[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	fieldCache.Store(t, fields)
	return fields
}

// checkValue reports unknown fields and type mismatches in v (decoded with
// UseNumber) against t, with paths.
func checkValue(v any, t reflect.Type, p path, errs *FieldErrors) {
	if v == nil || len(*errs) >= 50 {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case valuesType:
		switch v.(type) {
		case string, map[string]any:
		default:
			errs.add(p, "expected a string or a mapping, got %s", jsonType(v))
		}
		return
	case revisionType:
		s, _ := v.(string)
		if n, ok := v.(json.Number); ok {
			s = string(n)
		}
		if _, err := strconv.ParseUint(s, 10, 64); err != nil && s != "" {
			errs.add(p, "expected a non-negative integer, got %s", jsonType(v))
		}
		return
	case timeType:
		s, ok := v.(string)
		if _, err := time.Parse(time.RFC3339, s); !ok || err != nil {
			errs.add(p, "expected an RFC 3339 time such as 2026-01-02T15:04:05Z, got %s", jsonType(v))
		}
		return
	case rawType:
		return // free-form
	case ruleExprType:
		switch v.(type) {
		case string, json.Number:
		default:
			errs.add(p, "expected a PromQL expression (a string or a number), got %s", jsonType(v))
		}
		return
	case dependsOnType:
		l, ok := v.([]any)
		if !ok {
			errs.add(p, "expected a list, got %s", jsonType(v))
			return
		}
		for i, e := range l {
			switch e := e.(type) {
			case string:
			case map[string]any:
				checkValue(e, dependsOnRefType, p.index(i), errs)
				if _, ok := e["name"].(string); !ok {
					errs.add(p.index(i).child("name"), "required")
				}
			default:
				errs.add(p.index(i), "expected a service name or {name, namespace}, got %s", jsonType(e))
			}
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			errs.add(p, "expected an object, got %s", jsonType(v))
			return
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				errs.add(p.child(k), "unknown field")
				continue
			}
			checkValue(m[k], ft, p.child(k), errs)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			errs.add(p, "expected an object, got %s", jsonType(v))
			return
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			checkValue(m[k], t.Elem(), p.key(k), errs)
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 { // []byte: base64 string
			if _, ok := v.(string); !ok {
				errs.add(p, "expected a base64 string, got %s", jsonType(v))
			}
			return
		}
		l, ok := v.([]any)
		if !ok {
			errs.add(p, "expected a list, got %s", jsonType(v))
			return
		}
		for i, e := range l {
			checkValue(e, t.Elem(), p.index(i), errs)
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			hint := ""
			if _, num := v.(json.Number); num {
				hint = " (quote it)"
			}
			errs.add(p, "expected a string, got %s%s", jsonType(v), hint)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			errs.add(p, "expected true or false, got %s", jsonType(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			errs.add(p, "expected an integer, got %s", jsonType(v))
			return
		}
		if _, err := strconv.ParseInt(string(n), 10, t.Bits()); err != nil {
			errs.add(p, "expected an integer that fits %d bits, got %s", t.Bits(), n)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			errs.add(p, "expected an integer, got %s", jsonType(v))
			return
		}
		if _, err := strconv.ParseUint(string(n), 10, t.Bits()); err != nil {
			errs.add(p, "expected a non-negative integer that fits %d bits, got %s", t.Bits(), n)
		}
	case reflect.Interface:
		// free-form
	}
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case json.Number:
		return "number " + string(v)
	case bool:
		return "boolean"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func jsonToYAML(j []byte) (string, error) {
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return "", err
	}
	return string(y), nil
}

// FromStored decodes an object of a built-in kind as stored by Repo
// (JSON) and fills in its ResourceVersion and CreateRevision from the store
// record.
func FromStored(kind string, value []byte, resourceVersion, createRevision uint64) (Object, error) {
	return builtinKinds().FromStored(kind, value, resourceVersion, createRevision)
}

// FromStored is the package's FromStored for the kinds of r.
func (r *Registry) FromStored(kind string, value []byte, resourceVersion, createRevision uint64) (Object, error) {
	o := r.New(kind)
	if o == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownKind, kind)
	}
	if err := json.Unmarshal(value, o); err != nil {
		return nil, fmt.Errorf("decode stored %s: %w", kind, err)
	}
	md := &o.GetHeader().Metadata
	md.ResourceVersion = Revision(resourceVersion)
	md.CreateRevision = createRevision
	return o, nil
}

// Encode writes one object as "json" (indented) or "yaml".
func Encode(o Object, format string) ([]byte, error) {
	switch format {
	case "json":
		return json.MarshalIndent(o, "", "  ")
	case "yaml":
		j, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		return yaml.JSONToYAML(j)
	}
	return nil, fmt.Errorf("encode: unknown format %q (want json or yaml)", format)
}
