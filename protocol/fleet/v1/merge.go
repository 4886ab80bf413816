package fleetv1

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrOtherEpochDelta: a delta of another hub history cannot be merged.
var ErrOtherEpochDelta = errors.New("delta of another epoch")

// Merge applies ds, a full state or a delta from the hub, to cur, the
// state the agent holds, by the rules every agent follows (the reconciler
// and the fleet simulator). It returns the new full state, or nil when ds
// is not newer (an older or equal revision of the same history). replace
// says ds is a full state of another epoch, or below the held revision:
// the hub says the agent's state is from another history (a new hub, or
// one restored from a backup), and it replaces the held state. Services
// come out sorted by namespace and name. Telemetry follows the rule on
// DesiredState.telemetry. cur is not modified.
func Merge(cur, ds *DesiredState) (next *DesiredState, replace bool, err error) {
	otherEpoch := ds.GetEpoch() != "" && cur.GetEpoch() != "" && ds.GetEpoch() != cur.GetEpoch()
	replace = ds.GetFull() && (otherEpoch || ds.GetRevision() < cur.GetRevision())
	if otherEpoch && !ds.GetFull() {
		return nil, false, fmt.Errorf("%w: desired revision %d of epoch %s is a delta, but the held revision %d is of epoch %s",
			ErrOtherEpochDelta, ds.GetRevision(), ds.GetEpoch(), cur.GetRevision(), cur.GetEpoch())
	}
	if !replace && ds.GetRevision() <= cur.GetRevision() {
		return nil, false, nil
	}
	key := func(namespace, name string) string { return namespace + "/" + name }
	next = &DesiredState{Cluster: ds.GetCluster(), Revision: ds.GetRevision(), Full: true, Epoch: cmp.Or(ds.GetEpoch(), cur.GetEpoch())}
	// Telemetry: a full state's is the whole set (absent: none); a
	// delta's replaces the held one when present, else the held one stays.
	next.Telemetry = ds.GetTelemetry()
	if !ds.GetFull() && next.Telemetry == nil {
		next.Telemetry = cur.GetTelemetry()
	}
	byKey := map[string]*Service{}
	if !ds.GetFull() {
		for _, s := range cur.GetServices() {
			byKey[key(s.GetNamespace(), s.GetName())] = s
		}
		for _, t := range ds.GetTombstones() {
			delete(byKey, key(t.GetNamespace(), t.GetName()))
		}
	}
	for _, s := range ds.GetServices() {
		if s.GetName() == "" || s.GetNamespace() == "" {
			return nil, false, fmt.Errorf("desired revision %d: service %q in namespace %q: name and namespace are required", ds.GetRevision(), s.GetName(), s.GetNamespace())
		}
		byKey[key(s.GetNamespace(), s.GetName())] = s
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		next.Services = append(next.Services, byKey[k])
	}
	return next, replace, nil
}

// WindowOpen says whether one of the activation windows of a staged
// service is open at now (start ≤ now < end, in hub time), and when the
// next one starts if none is (zero: none to come).
func WindowOpen(ws []*Window, now time.Time) (open bool, nextStart time.Time) {
	for _, w := range ws {
		start, end := w.GetStart().AsTime(), w.GetEnd().AsTime()
		if !now.Before(start) && now.Before(end) {
			return true, time.Time{}
		}
		if start.After(now) && (nextStart.IsZero() || start.Before(nextStart)) {
			nextStart = start
		}
	}
	return false, nextStart
}
