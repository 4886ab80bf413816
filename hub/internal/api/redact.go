package api

import (
	"context"
	"fmt"
	"maps"
	"strings"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// Redaction of credentials for viewers.
//
// A viewer may read every object, but not the secrets in them. Each kind
// says what it hides (objects.KindDef.Redact); for the built-in kinds, what
// is hidden from a viewer (an admin sees everything):
//
//   - Secret: every value of data (and stringData). The keys stay visible:
//     the answer carries stringData with each key mapped to Redacted and no
//     data, so `tether get secret -o yaml` shows which keys exist.
//   - HelmRepository: the userinfo (user and password, or a token used as
//     the user name) of spec.url.
//   - On both kinds, the kubectl.kubernetes.io/last-applied-configuration
//     annotation, which holds a copy of the applied manifest.
//
// A redacted object carries the annotation AnnotationRedacted, and apply
// refuses an object that has it, so viewer output fed back to apply cannot
// overwrite real values with the marker.
const (
	// Redacted replaces every hidden value.
	Redacted = "<redacted>"
	// AnnotationRedacted marks an object whose values were hidden.
	AnnotationRedacted = "tether.dev/redacted"
	// annotationLastApplied is kubectl's copy of the applied manifest.
	annotationLastApplied = "kubectl.kubernetes.io/last-applied-configuration"
)

type roleKey struct{}

func withRole(ctx context.Context, r Role) context.Context {
	return context.WithValue(ctx, roleKey{}, r)
}

// roleOf returns the authenticated caller's role; no role is treated as the
// least privileged.
func roleOf(ctx context.Context) Role {
	if r, ok := ctx.Value(roleKey{}).(Role); ok {
		return r
	}
	return RoleViewer
}

// redactFor hides credentials in o, of a built-in kind, unless role is
// admin.
func redactFor(role Role, o objects.Object) { redact(objects.DefaultKinds(), role, o) }

// redact hides credentials in o unless role is admin: what o's kind
// registers as credentials (KindDef.Redact), and the last-applied
// annotation of such a kind. It changes o in place (callers pass objects
// freshly decoded from the store).
func redact(kinds *objects.Registry, role Role, o objects.Object) {
	if role == RoleAdmin {
		return
	}
	h := o.GetHeader()
	k := kinds.KindOf(o)
	if k == nil || !k.Redacts() {
		return
	}
	hidden := k.Redact(o, Redacted)
	if _, ok := h.Metadata.Annotations[annotationLastApplied]; ok {
		h.Metadata.Annotations = maps.Clone(h.Metadata.Annotations)
		h.Metadata.Annotations[annotationLastApplied] = Redacted
		hidden = append(hidden, "annotation "+annotationLastApplied)
	}
	if len(hidden) == 0 {
		return
	}
	if h.Metadata.Annotations == nil {
		h.Metadata.Annotations = map[string]string{}
	}
	h.Metadata.Annotations[AnnotationRedacted] = fmt.Sprintf("%s hidden from role %s", strings.Join(hidden, ", "), role)
}

// redactURL replaces the userinfo of a URL with Redacted (see
// objects.RedactURL).
func redactURL(raw string) (string, bool) { return objects.RedactURL(raw, Redacted) }

// refuseRedacted fails apply of an object that came from a redacted view.
func refuseRedacted(objs []objects.Object) error {
	for _, o := range objs {
		h := o.GetHeader()
		if _, ok := h.Metadata.Annotations[AnnotationRedacted]; ok {
			return badRequest("apply %s: it carries annotation %s: it is a viewer's redacted copy whose values are %q, not the real ones; apply the original manifest", h.Key(), AnnotationRedacted, Redacted)
		}
	}
	return nil
}
