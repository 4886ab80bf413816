package observe

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// maxReasonsPerObject keeps a badly drifted object from flooding status.
const maxReasonsPerObject = 10

func (o *Observer) objectDrift(ctx context.Context, obj Object, releaseNS string, f *DriftFilter) ([]string, error) {
	mapping, err := o.mapper.Map(ctx, obj.GVK)
	if errors.Is(err, ErrNoMatch) {
		// The API (a CRD) itself is gone.
		return []string{fmt.Sprintf("%s is missing (no API for %s)", obj.Ref(obj.Namespace), obj.GVK)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", obj.GVK, err)
	}
	ns := ""
	if mapping.Namespaced {
		ns = obj.Namespace
		if ns == "" {
			ns = releaseNS
		}
	}
	if f.Ignored(obj, ns) {
		return nil, nil
	}
	Prune(obj.Content, f.Excluded(obj, ns))
	ref := obj.Ref(ns)
	live, err := o.dynamic.Resource(mapping.Resource).Namespace(ns).Get(ctx, obj.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return []string{ref + " is missing"}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", ref, err)
	}
	if live.GetDeletionTimestamp() != nil {
		return []string{ref + " is being deleted"}, nil
	}
	var diffs []string
	compareObject(obj.GVK.Kind, obj.Content, live.Object, &diffs)
	if len(diffs) > maxReasonsPerObject {
		diffs = append(diffs[:maxReasonsPerObject], fmt.Sprintf("and %d more", len(diffs)-maxReasonsPerObject))
	}
	out := make([]string, len(diffs))
	for i, d := range diffs {
		out[i] = ref + ": " + d
	}
	return out, nil
}

// compareObject appends a line per manifest field the live object does not
// match. Only labels and annotations of metadata count; status never.
func compareObject(kind string, want, live map[string]any, diffs *[]string) {
	keys := sortedKeys(want)
	for _, k := range keys {
		switch k {
		case "apiVersion", "kind", "status":
			continue
		case "metadata":
			wm, _ := want[k].(map[string]any)
			lm, _ := live[k].(map[string]any)
			for _, mk := range []string{"labels", "annotations"} {
				if w, ok := wm[mk]; ok {
					compareValue("metadata."+mk, w, lookup(lm, mk), diffs)
				}
			}
			continue
		case "stringData":
			if kind == "Secret" {
				compareStringData(want[k], live["data"], diffs)
				continue
			}
		}
		compareValue(k, want[k], lookup(live, k), diffs)
	}
}

func compareStringData(want, liveData any, diffs *[]string) {
	wm, _ := want.(map[string]any)
	lm, _ := liveData.(map[string]any)
	for _, k := range sortedKeys(wm) {
		w := base64.StdEncoding.EncodeToString([]byte(scalarString(wm[k])))
		l, ok := lm[k].(string)
		switch {
		case !ok:
			*diffs = append(*diffs, fmt.Sprintf("data.%s is unset, want a value", k))
		case l != w:
			*diffs = append(*diffs, fmt.Sprintf("data.%s differs from stringData", k))
		}
	}
}

// absent stands for a field the live object does not have.
type absentT struct{}

var absent = absentT{}

func lookup(m map[string]any, k string) any {
	if v, ok := m[k]; ok {
		return v
	}
	return absent
}

func compareValue(path string, want, live any, diffs *[]string) {
	if want == nil {
		return // null in the manifest sets nothing
	}
	if live == absent || live == nil {
		if !isZero(want) {
			*diffs = append(*diffs, fmt.Sprintf("%s is unset, want %s", path, show(want)))
		}
		return
	}
	switch w := want.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			*diffs = append(*diffs, fmt.Sprintf("%s is %s, want an object", path, show(live)))
			return
		}
		for _, k := range sortedKeys(w) {
			compareValue(path+"."+k, w[k], lookup(l, k), diffs)
		}
	case []any:
		l, ok := live.([]any)
		if !ok {
			*diffs = append(*diffs, fmt.Sprintf("%s is %s, want a list", path, show(live)))
			return
		}
		if len(l) < len(w) {
			*diffs = append(*diffs, fmt.Sprintf("%s has %d items, want %d", path, len(l), len(w)))
			return
		}
		for i := range w {
			compareValue(fmt.Sprintf("%s[%d]", path, i), w[i], l[i], diffs)
		}
	case string:
		if w == "" {
			return // asks the server for a default
		}
		if !scalarEqual(w, live) {
			*diffs = append(*diffs, fmt.Sprintf("%s is %s, want %s", path, show(live), show(want)))
		}
	default:
		if !scalarEqual(want, live) {
			*diffs = append(*diffs, fmt.Sprintf("%s is %s, want %s", path, show(live), show(want)))
		}
	}
}

// scalarEqual compares leaf values: numbers by value whatever their Go
// type, strings that are resource quantities by amount, and a number
// against a string by text (int-or-string fields).
func scalarEqual(want, live any) bool {
	if reflect.DeepEqual(want, live) {
		return true
	}
	wn, wok := number(want)
	ln, lok := number(live)
	if wok && lok {
		return wn == ln
	}
	ws, wIsScalar := scalarText(want)
	ls, lIsScalar := scalarText(live)
	if !wIsScalar || !lIsScalar {
		return false
	}
	if ws == ls {
		return true
	}
	wq, err1 := resource.ParseQuantity(ws)
	lq, err2 := resource.ParseQuantity(ls)
	return err1 == nil && err2 == nil && wq.Cmp(lq) == 0
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case float32:
		return float64(n), true
	}
	return 0, false
}

func scalarText(v any) (string, bool) {
	switch s := v.(type) {
	case string:
		return s, true
	case bool:
		return strconv.FormatBool(s), true
	}
	if n, ok := number(v); ok {
		if n == math.Trunc(n) && math.Abs(n) < 1e15 {
			return strconv.FormatInt(int64(n), 10), true
		}
		return strconv.FormatFloat(n, 'f', -1, 64), true
	}
	return "", false
}

func scalarString(v any) string {
	s, _ := scalarText(v)
	return s
}

func isZero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case bool:
		return !x
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	if n, ok := number(v); ok {
		return n == 0
	}
	return false
}

// show renders a value for a message: scalars as they are, strings
// quoted only when empty, objects and lists by their size.
func show(v any) string {
	switch x := v.(type) {
	case absentT:
		return "unset"
	case nil:
		return "null"
	case string:
		if x == "" {
			return `""`
		}
		if len(x) > 80 {
			return strconv.Quote(x[:77] + "...")
		}
		return x
	case map[string]any:
		return fmt.Sprintf("an object with %d fields", len(x))
	case []any:
		return fmt.Sprintf("a list of %d items", len(x))
	}
	if s, ok := scalarText(v); ok {
		return s
	}
	return strings.TrimSpace(fmt.Sprint(v))
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
