package apply

import (
	"bytes"
	"context"

	"github.com/tetherfleet/tether/agent/internal/observe"
)

// keepExcluded is the post-renderer of an upgrade or repair of a release
// with driftExclusions: each excluded path of an object already on the
// cluster is rendered with its live value, so Helm's three-way merge
// leaves it as the other controller set it (an HPA's spec.replicas).
// Objects not yet on the cluster are created as the chart renders them.
type keepExcluded struct {
	ctx       context.Context
	obs       *observe.Observer
	namespace string
	filter    *observe.DriftFilter
}

func (k keepExcluded) Run(in *bytes.Buffer) (*bytes.Buffer, error) {
	out, err := k.obs.KeepExcluded(k.ctx, in.Bytes(), k.namespace, k.filter)
	if err != nil {
		return nil, err
	}
	return bytes.NewBuffer(out), nil
}
