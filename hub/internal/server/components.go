package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// component is one long-running part of the hub. Run blocks until ctx is
// done (then returns nil) or the component fails.
type component struct {
	name string
	run  func(ctx context.Context) error
}

// runComponents runs every component until ctx is done. A component that
// returns nil has finished and the others go on; the first to fail
// cancels the rest and its error, naming it, is returned once every
// component has returned. Later failures are logged, not lost.
func runComponents(ctx context.Context, log *slog.Logger, comps []component) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, c := range comps {
		wg.Go(func() {
			err := c.run(ctx)
			if err == nil {
				return
			}
			err = fmt.Errorf("%s: %w", c.name, err)
			mu.Lock()
			defer mu.Unlock()
			if first == nil {
				first = err
				cancel(err)
				return
			}
			log.Warn("hub component failed while stopping", "component", c.name, "err", err)
		})
	}
	wg.Wait()
	return first
}
