package telemetry

import (
	"encoding/binary"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// The series cache remembers, per cluster, the label sets the receiver
// has decoded and validated, keyed by their bytes on the wire, with the
// TSDB series ref the last append returned. A series the cluster sent
// before then costs one hash of its label bytes: no label decoding,
// UTF-8 and name checks, sorting, label building, nor the TSDB's lookup
// by label hash (Prometheus' scrape loop keeps the same cache, keyed by
// the exposition line). It matters most for live ingestion, where a batch
// holds one sample of each series and the labels are most of the work.
//
// Trust: the key is two 64-bit maphash sums with random seeds of this
// process over the bytes of the series' Label fields (their span on the
// wire, or each field after its length when other fields lie between
// them, with other seeds), so
// an agent cannot aim at a collision (it cannot see the seeds), and a
// chance collision among a million series has a probability near 1e-27.
// A cache is per cluster and its label sets carry that cluster's name, so
// even a collision could only mix two series of the same cluster.
// Decoding is a pure function of the label bytes and the cluster, so a
// hit accepts exactly what decoding them again would.
//
// A stale ref (the TSDB dropped the series after a head compaction) is
// harmless: Append falls back to the label set and returns the new ref.
// Memory is bounded: at most MaxCachedSeries entries over all clusters
// and MaxCachedSeriesPerCluster per cluster (past them a series is
// decoded every time, as without the cache), and an entry unseen for
// CachedSeriesTTL is dropped.

type seriesKey struct{ a, b uint64 }

type cachedSeries struct {
	lset labels.Labels
	ref  storage.SeriesRef
	// seen is the hub's clock, in Unix ms, at the last batch with it.
	seen int64
}

// clusterSeries is one cluster's cache. Its mutex is held while one batch
// of the cluster is decoded and appended: an agent's batches arrive one
// connection at a time, so it is not contended.
type clusterSeries struct {
	mu        sync.Mutex
	m         map[seriesKey]*cachedSeries
	lastSweep int64
	// caches is the owner, for the budget; nil: lookups only miss.
	caches *seriesCaches
	// now is the batch's time in Unix ms (set under mu).
	now int64
}

type seriesCaches struct {
	// seedA and seedB key a span of label fields, seedC and seedD the
	// fields one by one; seedE and seedF hash a symbol, and mulA and mulB
	// (random, odd) chain a series' symbol hashes (symbols.go).
	seedA, seedB, seedC, seedD, seedE, seedF maphash.Seed
	mulA, mulB                               uint64
	maxTotal                                 int64
	maxPerCluster                            int
	ttl                                      time.Duration
	total                                    atomic.Int64

	mu        sync.Mutex
	clusters  map[string]*clusterSeries
	lastSweep int64
}

func newSeriesCaches(maxTotal, maxPerCluster int, ttl time.Duration) *seriesCaches {
	return &seriesCaches{
		seedA: maphash.MakeSeed(), seedB: maphash.MakeSeed(), seedC: maphash.MakeSeed(), seedD: maphash.MakeSeed(),
		seedE: maphash.MakeSeed(), seedF: maphash.MakeSeed(), mulA: rand.Uint64() | 1, mulB: rand.Uint64() | 1,
		maxTotal: int64(maxTotal), maxPerCluster: maxPerCluster, ttl: ttl,
		clusters: map[string]*clusterSeries{},
	}
}

// lock returns cluster's cache locked for one batch at now; the caller
// unlocks it. With caching off (maxTotal 0) it returns nil.
func (c *seriesCaches) lock(cluster string, now time.Time) *clusterSeries {
	if c == nil || c.maxTotal <= 0 {
		return nil
	}
	ms := now.UnixMilli()
	c.mu.Lock()
	cs, ok := c.clusters[cluster]
	if !ok {
		cs = &clusterSeries{m: map[seriesKey]*cachedSeries{}, caches: c, lastSweep: ms}
		c.clusters[cluster] = cs
	}
	sweepAll := ms-c.lastSweep > c.ttl.Milliseconds()
	if sweepAll {
		c.lastSweep = ms
	}
	c.mu.Unlock()
	if sweepAll {
		c.sweepIdle(cs, ms)
	}
	cs.mu.Lock()
	cs.now = ms
	if ms-cs.lastSweep > c.ttl.Milliseconds()/2 {
		cs.sweep(ms)
	}
	return cs
}

// sweepIdle sweeps the clusters that sent nothing lately (a busy one
// sweeps itself), dropping caches left empty; skip is the caller's.
func (c *seriesCaches) sweepIdle(skip *clusterSeries, ms int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, cs := range c.clusters {
		if cs == skip || !cs.mu.TryLock() {
			continue
		}
		cs.sweep(ms)
		if len(cs.m) == 0 {
			delete(c.clusters, name)
			cs.caches = nil
		}
		cs.mu.Unlock()
	}
}

// forget drops cluster's cache.
func (c *seriesCaches) forget(cluster string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	cs, ok := c.clusters[cluster]
	delete(c.clusters, cluster)
	c.mu.Unlock()
	if ok {
		cs.mu.Lock()
		c.total.Add(-int64(len(cs.m)))
		cs.m = map[seriesKey]*cachedSeries{}
		cs.caches = nil
		cs.mu.Unlock()
	}
}

// len is the number of cached series over all clusters.
func (c *seriesCaches) len() int64 {
	if c == nil {
		return 0
	}
	return c.total.Load()
}

// sweep drops the entries unseen for the TTL; cs.mu is held.
func (cs *clusterSeries) sweep(ms int64) {
	cs.lastSweep = ms
	if cs.caches == nil {
		return
	}
	cutoff := ms - cs.caches.ttl.Milliseconds()
	n := 0
	for k, e := range cs.m {
		if e.seen < cutoff {
			delete(cs.m, k)
			n++
		}
	}
	cs.caches.total.Add(-int64(n))
}

// spanKey hashes the Label fields of one series as they lie on the wire,
// one after the other (tags and lengths included, so the span decodes to
// one list of labels only).
func (cs *clusterSeries) spanKey(span []byte) seriesKey {
	return seriesKey{maphash.Bytes(cs.caches.seedA, span), maphash.Bytes(cs.caches.seedB, span)}
}

// key hashes the Label fields of one series given one by one (when other
// fields lie between them), each after its length; other seeds than
// spanKey's keep the two forms apart.
func (cs *clusterSeries) key(raw [][]byte) seriesKey {
	var ha, hb maphash.Hash
	ha.SetSeed(cs.caches.seedC)
	hb.SetSeed(cs.caches.seedD)
	var n [binary.MaxVarintLen64]byte
	for _, l := range raw {
		p := binary.AppendUvarint(n[:0], uint64(len(l)))
		_, _ = ha.Write(p)
		_, _ = hb.Write(p)
		_, _ = ha.Write(l)
		_, _ = hb.Write(l)
	}
	return seriesKey{ha.Sum64(), hb.Sum64()}
}

// get returns the entry of key, marked seen, or nil.
func (cs *clusterSeries) get(k seriesKey) *cachedSeries {
	e := cs.m[k]
	if e != nil {
		e.seen = cs.now
	}
	return e
}

// add caches lset under k if the budgets allow; it returns the entry or
// nil.
func (cs *clusterSeries) add(k seriesKey, lset labels.Labels) *cachedSeries {
	c := cs.caches
	if c == nil || len(cs.m) >= c.maxPerCluster {
		return nil
	}
	if c.total.Add(1) > c.maxTotal {
		c.total.Add(-1)
		return nil
	}
	e := &cachedSeries{lset: lset, seen: cs.now}
	cs.m[k] = e
	return e
}
