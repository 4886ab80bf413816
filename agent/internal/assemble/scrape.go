package assemble

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link"
	"github.com/tetherfleet/tether/agent/internal/reconcile"
	"github.com/tetherfleet/tether/agent/internal/scrape"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// scrapes runs the scrape configs of the desired state. The scraper needs
// the cluster's name, which an agent learns at enrolment, so it starts
// once the agent has an identity; until then (and without configs) it
// holds nothing.
type scrapes struct {
	rec  *reconcile.Reconciler
	a    *Agent
	mu   sync.Mutex
	scr  *scrape.Scraper
	kube dynamic.Interface
}

func newScrapes(a *Agent, rc *rest.Config, rec *reconcile.Reconciler) (*scrapes, error) {
	kube, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("scrape: client of the local kube-apiserver: %w", err)
	}
	return &scrapes{rec: rec, a: a, kube: kube}, nil
}

// handler is the link's desired-state handler: the reconciler, then the
// scraper told the (possibly changed) scrape configs.
type handler struct {
	*reconcile.Reconciler
	s *scrapes
}

func (h handler) Desired(ctx context.Context, ds *fleetv1.DesiredState) error {
	if err := h.Reconciler.Desired(ctx, ds); err != nil {
		return err
	}
	h.s.mu.Lock()
	scr := h.s.scr
	h.s.mu.Unlock()
	if scr != nil {
		scr.Update(h.Reconciler.Telemetry())
	}
	return nil
}

var _ link.EpochHandler = handler{}

// targets is the scrape targets' last health; nil before the scraper
// started.
func (s *scrapes) targets() []scrape.TargetStatus {
	s.mu.Lock()
	scr := s.scr
	s.mu.Unlock()
	if scr == nil {
		return nil
	}
	return scr.Targets()
}

// run waits for the agent's identity, then runs the scraper until ctx
// ends.
func (s *scrapes) run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var cluster string
	for cluster == "" {
		id, err := s.a.cache.Identity()
		switch {
		case err == nil:
			cluster = id.Cluster
			continue
		case !errors.Is(err, cache.ErrNoIdentity):
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
	scr, err := scrape.New(scrape.Config{Cluster: cluster, Kube: s.kube, Emit: s.a.ship.Emit, Logger: s.a.log.With("component", "scrape")})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.scr = scr
	s.mu.Unlock()
	scr.Update(s.rec.Telemetry())
	return scr.Run(ctx)
}
