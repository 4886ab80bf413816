package objects

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tetherfleet/tether/hub/internal/store"
)

// checkChains enforces ServiceTemplateChains, as k0rdent does, on an
// object that deploys services. For each service that names a
// templateChain (which checkRefs has found, in the object's namespace or
// a system namespace):
//   - the chain must list the service's template;
//   - when the stored object has a service of the same name and namespace
//     with another template, the chain must list the old template with
//     the new one among its availableUpgrades.
//
// Services without a templateChain are not checked, as in k0rdent.
func (r *Repo) checkChains(v *view, o Object) FieldErrors {
	k := r.cfg.Kinds.Get(o.GetHeader().Kind)
	ck := r.cfg.Kinds.Get(KindServiceTemplateChain)
	if k == nil || k.serviceSpec == nil || ck == nil {
		return nil
	}
	ss := k.serviceSpec(o)
	h := o.GetHeader()
	var errs FieldErrors
	var old *ServiceSpec
	oldLoaded := false
	for i, svc := range ss.Services {
		if svc.TemplateChain == "" {
			continue
		}
		field := fmt.Sprintf("spec.serviceSpec.services[%d]", i)
		chain, err := r.chain(v, ck, h.Metadata.Namespace, svc.TemplateChain)
		if err != nil {
			errs.Add(field+".templateChain", "%v", err)
			continue
		}
		name := chain.GetHeader().nsName()
		entry := chain.supported(svc.Template)
		if entry == nil {
			errs.Add(field+".template", "ServiceTemplate %s is not in ServiceTemplateChain %s (its templates: %s)", svc.Template, name, orNone(strings.Join(chain.templateNames(), ", ")))
			continue
		}
		if !oldLoaded {
			oldLoaded = true
			if old, err = r.storedServices(v.tx, k, h); err != nil {
				errs.Add(field+".templateChain", "%v", err)
				continue
			}
		}
		prev := old.service(svc.Name, svc.Namespace)
		if prev == nil || prev.Template == svc.Template {
			continue
		}
		allowed := chain.upgradesFrom(prev.Template)
		if !slices.Contains(allowed, svc.Template) {
			errs.Add(field+".template", "upgrade from %s to %s is not allowed by ServiceTemplateChain %s (allowed: %s)", prev.Template, svc.Template, name, orNone(strings.Join(allowed, ", ")))
		}
	}
	return errs
}

// chain returns the ServiceTemplateChain name an object in namespace ns
// uses, as the view sees it.
func (r *Repo) chain(v *view, ck *Kind, ns, name string) (*ServiceTemplateChain, error) {
	at, ok, err := r.resolve(v, ck, ns, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New(r.notFound(v, ck, ns, name))
	}
	o := v.get(ck.name, at, name)
	if o == nil {
		return nil, fmt.Errorf("read ServiceTemplateChain %s/%s: %w", at, name, ErrNotFound)
	}
	c, ok := o.(*ServiceTemplateChain)
	if !ok {
		return nil, fmt.Errorf("ServiceTemplateChain %s/%s is a %T", at, name, o)
	}
	return c, nil
}

// storedServices returns the serviceSpec of the stored object with h's
// key, or nil if there is none.
func (r *Repo) storedServices(tx store.Tx, k *Kind, h *Header) (*ServiceSpec, error) {
	so, err := tx.Get(h.Kind, h.Metadata.Namespace, h.Metadata.Name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stored %s: %w", h.Key(), err)
	}
	o, err := r.cfg.Kinds.FromStored(h.Kind, so.Value, so.ResourceVersion, so.CreateRevision)
	if err != nil {
		return nil, fmt.Errorf("read stored %s: %w", h.Key(), err)
	}
	return k.serviceSpec(o), nil
}

// service returns the service named name in namespace ns, if ss has one.
func (ss *ServiceSpec) service(name, ns string) *Service {
	if ss == nil {
		return nil
	}
	for i := range ss.Services {
		if s := &ss.Services[i]; s.Name == name && s.Namespace == ns {
			return s
		}
	}
	return nil
}

// supported returns the chain's entry for template, or nil.
func (c *ServiceTemplateChain) supported(template string) *SupportedTemplate {
	for i := range c.Spec.SupportedTemplates {
		if st := &c.Spec.SupportedTemplates[i]; st.Name == template {
			return st
		}
	}
	return nil
}

// templateNames lists the chain's templates in its order.
func (c *ServiceTemplateChain) templateNames() []string {
	out := make([]string, 0, len(c.Spec.SupportedTemplates))
	for _, st := range c.Spec.SupportedTemplates {
		out = append(out, st.Name)
	}
	return out
}

// upgradesFrom lists the templates the chain allows upgrading template to.
func (c *ServiceTemplateChain) upgradesFrom(template string) []string {
	st := c.supported(template)
	if st == nil {
		return nil
	}
	out := make([]string, 0, len(st.AvailableUpgrades))
	for _, u := range st.AvailableUpgrades {
		out = append(out, u.Name)
	}
	return out
}
