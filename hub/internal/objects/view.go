package objects

import (
	"fmt"
	"slices"

	"github.com/tetherfleet/tether/hub/internal/store"
)

// view is what one store transaction sees: the store (with the
// transaction's own writes) and the objects of an Apply batch not
// written yet, by Header.Key. What AccessManagement distributes is
// computed once per view, when first needed.
type view struct {
	r      *Repo
	tx     store.Tx
	batch  map[string]Object
	access *Access
}

func (r *Repo) view(tx store.Tx, batch map[string]Object) *view {
	return &view{r: r, tx: tx, batch: batch}
}

func key(kind, ns, name string) string {
	return (&Header{Kind: kind, Metadata: Metadata{Namespace: ns, Name: name}}).Key()
}

// exists reports whether the view has the object.
func (v *view) exists(kind, ns, name string) bool {
	if _, ok := v.batch[key(kind, ns, name)]; ok {
		return true
	}
	_, err := v.tx.Get(kind, ns, name)
	return err == nil
}

// get returns the object, or nil if the view has none (or it does not
// decode).
func (v *view) get(kind, ns, name string) Object {
	if o, ok := v.batch[key(kind, ns, name)]; ok {
		return o
	}
	so, err := v.tx.Get(kind, ns, name)
	if err != nil {
		return nil
	}
	o, err := v.r.cfg.Kinds.FromStored(kind, so.Value, so.ResourceVersion, so.CreateRevision)
	if err != nil {
		return nil
	}
	return o
}

// list returns a kind's objects in namespace ns ("" for all), the
// batch's replacing the stored ones.
func (v *view) list(kind, ns string) ([]Object, error) {
	sos, err := v.tx.List(kind, ns)
	if err != nil {
		return nil, err
	}
	var out []Object
	seen := map[string]bool{}
	for _, so := range sos {
		k := key(kind, so.Namespace, so.Name)
		seen[k] = true
		if o, ok := v.batch[k]; ok {
			out = append(out, o)
			continue
		}
		o, err := v.r.cfg.Kinds.FromStored(kind, so.Value, so.ResourceVersion, so.CreateRevision)
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", kind, so.Namespace, so.Name, err)
		}
		out = append(out, o)
	}
	for k, o := range v.batch {
		h := o.GetHeader()
		if h.Kind == kind && (ns == "" || h.Metadata.Namespace == ns) && !seen[k] {
			out = append(out, o)
		}
	}
	return out, nil
}

// accessOf returns what the view's AccessManagements distribute.
func (v *view) accessOf() (*Access, error) {
	if v.access != nil {
		return v.access, nil
	}
	var ams []*AccessManagement
	if v.r.cfg.Kinds.Get(KindAccessManagement) != nil {
		objs, err := v.list(KindAccessManagement, "")
		if err != nil {
			return nil, fmt.Errorf("read AccessManagements: %w", err)
		}
		for _, o := range objs {
			if am, ok := o.(*AccessManagement); ok {
				ams = append(ams, am)
			}
		}
	}
	var chains []*ServiceTemplateChain
	if len(ams) > 0 && v.r.cfg.Kinds.Get(KindServiceTemplateChain) != nil {
		for _, sys := range v.r.cfg.SystemNamespaces {
			objs, err := v.list(KindServiceTemplateChain, sys)
			if err != nil {
				return nil, fmt.Errorf("read ServiceTemplateChains: %w", err)
			}
			for _, o := range objs {
				if c, ok := o.(*ServiceTemplateChain); ok {
					chains = append(chains, c)
				}
			}
		}
	}
	v.access = NewAccess(ams, chains, v.r.cfg.SystemNamespaces)
	return v.access, nil
}

// checkAccessChange refuses a batch, already written in tx, that takes
// away from a stored ClusterDeployment or MultiClusterService a
// ServiceTemplate or ServiceTemplateChain it uses: an AccessManagement
// that starts managing its namespace without distributing them, or a
// changed chain of a system namespace that no longer brings them.
func (r *Repo) checkAccessChange(tx store.Tx, batch []Object) error {
	var changer Object
	for _, o := range batch {
		h := o.GetHeader()
		if h.Kind == KindAccessManagement || h.Kind == KindServiceTemplateChain && slices.Contains(r.cfg.SystemNamespaces, h.Metadata.Namespace) {
			changer = o
			break
		}
	}
	if changer == nil {
		return nil
	}
	broken, err := r.brokenUsers(tx)
	if err != nil {
		return err
	}
	if len(broken) == 0 {
		return nil
	}
	h := changer.GetHeader()
	var fe FieldErrors
	for _, b := range broken {
		fe.Add("spec", "would take away from %s", b)
	}
	return &ObjectError{Kind: h.Kind, Key: h.nsName(), Fields: fe}
}

// brokenUsers lists the stored objects that deploy services whose
// ServiceTemplate or ServiceTemplateChain references no longer resolve
// in tx: "ClusterDeployment dev/edge-1: spec.serviceSpec.services[0].template: why".
func (r *Repo) brokenUsers(tx store.Tx) ([]string, error) {
	v := r.view(tx, nil)
	var out []string
	for _, k := range r.cfg.Kinds.kinds {
		if k.serviceSpec == nil {
			continue
		}
		objs, err := v.list(k.name, "")
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			fe, err := r.checkRefs(v, o)
			if err != nil {
				return nil, err
			}
			for _, e := range fe {
				out = append(out, o.GetHeader().Key()+": "+e.Error())
			}
		}
	}
	return out, nil
}
