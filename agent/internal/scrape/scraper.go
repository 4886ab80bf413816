package scrape

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"
	"k8s.io/client-go/dynamic"

	"github.com/tetherfleet/tether/agent/internal/staleness"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// acceptHeader is what Prometheus asks for (without protobuf): OpenMetrics
// first, then the text format.
const acceptHeader = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"

// Health values of a target.
const (
	HealthUp      = "up"
	HealthDown    = "down"
	HealthUnknown = "unknown"
)

// Config configures a Scraper.
type Config struct {
	// Cluster is this agent's cluster: every series gets cluster="<it>".
	Cluster string
	// Kube is a dynamic client of the local kube-apiserver (pods,
	// services and EndpointSlices are listed with it).
	Kube dynamic.Interface
	// Emit hands a batch to the telemetry sink (the outbox). A batch it
	// refuses is dropped and counted.
	Emit func(*telemetryv1.MetricBatch) error
	// HTTPClient scrapes targets; nil: a client that verifies TLS and
	// never uses a proxy (targets are cluster addresses).
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Now stamps samples without a timestamp; nil: time.Now.
	Now func() time.Time
	// DiscoveryInterval: how often targets are listed again. Default 30s.
	DiscoveryInterval time.Duration
	// FlushInterval: how often buffered samples go out. Default 10s.
	FlushInterval time.Duration
	// MaxBodyBytes bounds one scrape's body (decompressed); a larger one
	// fails the scrape. Default 16 MiB.
	MaxBodyBytes int64
	// MaxTargetsPerConfig bounds the targets of one scrape config; more
	// are not scraped and the config reports it. Default 1000.
	MaxTargetsPerConfig int
	// MaxBatchSeries bounds the series of one batch (at most
	// telemetryv1.MaxSeries). Default 5000.
	MaxBatchSeries int
	// MaxBufferedSeries bounds the series waiting for a flush; a scrape
	// that does not fit is dropped and counted. Default 100000.
	MaxBufferedSeries int
	// MetadataResendInterval: how often the metadata of every scraped
	// family is sent again though unchanged, so a hub that lost it (a
	// restart: the hub keeps metadata in memory) has it back. Default
	// 10m, as often as a family's HELP can matter to a dashboard.
	MetadataResendInterval time.Duration
	// MaxStaleSeries bounds the series tracked per target for staleness
	// markers (an exporter is untrusted input); series past it are
	// scraped but get no marker when they go, and are counted
	// (Stats.UntrackedSeries). Default staleness.DefaultMaxSeries.
	MaxStaleSeries int
}

// DefaultConfig returns the defaults New applies to zero fields.
func DefaultConfig() Config {
	return Config{DiscoveryInterval: 30 * time.Second, FlushInterval: 10 * time.Second, MaxBodyBytes: 16 << 20,
		MaxTargetsPerConfig: 1000, MaxBatchSeries: 5000, MaxBufferedSeries: 100000, MetadataResendInterval: 10 * time.Minute,
		MaxStaleSeries: staleness.DefaultMaxSeries}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Cluster == "":
		return errors.New("scrape: Config.Cluster is required")
	case c.Kube == nil:
		return errors.New("scrape: Config.Kube is required")
	case c.Emit == nil:
		return errors.New("scrape: Config.Emit is required")
	case c.DiscoveryInterval < 0, c.FlushInterval < 0, c.MetadataResendInterval < 0:
		return errors.New("scrape: Config intervals must not be negative")
	case c.MaxBodyBytes < 0, c.MaxTargetsPerConfig < 0, c.MaxBufferedSeries < 0, c.MaxStaleSeries < 0:
		return errors.New("scrape: Config bounds must not be negative")
	case c.MaxBatchSeries < 0 || c.MaxBatchSeries > telemetryv1.MaxSeries:
		return fmt.Errorf("scrape: Config.MaxBatchSeries %d: want 0 (default) to %d", c.MaxBatchSeries, telemetryv1.MaxSeries)
	}
	return nil
}

// TargetStatus is one target's last scrape, or a scrape config that
// cannot run (URL empty, Health unknown, LastError says why).
type TargetStatus struct {
	Job          string            `json:"job"`
	URL          string            `json:"url"`
	Labels       map[string]string `json:"labels,omitempty"`
	Health       string            `json:"health"`
	LastError    string            `json:"lastError,omitempty"`
	LastScrape   time.Time         `json:"lastScrape,omitzero"`
	LastDuration time.Duration     `json:"lastDuration,omitempty"`
	// Samples kept by the last scrape; Invalid: series it dropped because
	// their names or labels are not legal on the wire.
	Samples int `json:"samples"`
	Invalid int `json:"invalid,omitempty"`
}

// Stats are the scraper's counters since it started.
type Stats struct {
	Scrapes, Failures uint64
	// DroppedSeries: series of scrapes that did not fit the buffer.
	DroppedSeries uint64
	// Batches emitted; EmitErrors: batches the sink refused (dropped).
	Batches, EmitErrors uint64
	// StaleMarkers: staleness markers buffered (series gone from a
	// target, every series of a failed scrape or of a removed target).
	// UntrackedSeries: scraped series not tracked for staleness because
	// their target's tracker was full (Config.MaxStaleSeries), counted
	// once per scrape.
	StaleMarkers, UntrackedSeries uint64
}

// Scraper runs the scrape configs it is given (Update) until Run's
// context ends.
type Scraper struct {
	cfg  Config
	log  *slog.Logger
	http *http.Client
	disc *discoverer

	update chan struct{} // configs changed
	flushc chan struct{} // buffer is large

	mu       sync.Mutex
	jobs     []*jobState
	loops    map[string]*loop // by target key
	buffer   []*telemetryv1.Series
	metadata map[string]*telemetryv1.MetricMetadata // to send
	sentMeta map[string]string                      // family -> what was sent
	metaFrom time.Time                              // when sentMeta was last emptied
	dirty    bool                                   // health changed since the last flush
	stats    Stats
	wg       sync.WaitGroup
}

type jobState struct {
	job       *job
	print     string // the wire config, marshalled: a change restarts its loops
	name      string
	err       error // config error: the job does not run
	discErr   error
	truncated bool // more targets found than the limit
}

type loop struct {
	t      *target
	print  string
	cancel context.CancelFunc
	status TargetStatus
	// removed (under Scraper.mu): sync stopped the loop because the
	// target or its config went, not because the scraper stops; its
	// series then get staleness markers, unless replaced: a loop of the
	// same target under the changed config goes on with its series.
	removed, replaced bool
	// prev is the loop this one replaces: its tracker is taken over
	// once prev's goroutine is done (closes done).
	prev *loop
	done chan struct{}

	// Used by the loop's goroutine only.
	stale  *staleness.Tracker // the series of the last successful scrape
	lastMs int64              // the last scrape's timestamp
}

// New returns a Scraper with no configs.
func New(cfg Config) (*Scraper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.DiscoveryInterval == 0 {
		cfg.DiscoveryInterval = d.DiscoveryInterval
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = d.FlushInterval
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = d.MaxBodyBytes
	}
	if cfg.MaxTargetsPerConfig == 0 {
		cfg.MaxTargetsPerConfig = d.MaxTargetsPerConfig
	}
	if cfg.MaxBatchSeries == 0 {
		cfg.MaxBatchSeries = d.MaxBatchSeries
	}
	if cfg.MaxBufferedSeries == 0 {
		cfg.MaxBufferedSeries = d.MaxBufferedSeries
	}
	if cfg.MetadataResendInterval == 0 {
		cfg.MetadataResendInterval = d.MetadataResendInterval
	}
	if cfg.MaxStaleSeries == 0 {
		cfg.MaxStaleSeries = d.MaxStaleSeries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		tr.MaxIdleConnsPerHost = 2
		hc = &http.Client{Transport: tr}
	}
	return &Scraper{
		cfg: cfg, log: cfg.Logger, http: hc,
		disc:   &discoverer{client: cfg.Kube, cluster: cfg.Cluster, maxPerJob: cfg.MaxTargetsPerConfig, pageSize: 500},
		update: make(chan struct{}, 1), flushc: make(chan struct{}, 1),
		loops: map[string]*loop{}, metadata: map[string]*telemetryv1.MetricMetadata{}, sentMeta: map[string]string{},
	}, nil
}

// Update replaces the scrape configs with those of t (nil: none), as the
// desired state holds them. A config that cannot run is reported by
// Targets; the others run. Running targets of unchanged configs go on.
func (s *Scraper) Update(t *fleetv1.Telemetry) {
	var jobs []*jobState
	for i, c := range t.GetScrapeConfigs() {
		js := &jobState{name: c.GetNamespace() + "/" + c.GetName()}
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
		js.print = string(b)
		if i >= fleetv1.MaxScrapeConfigs {
			js.err = fmt.Errorf("scrape config %s: over the limit of %d scrape configs", js.name, fleetv1.MaxScrapeConfigs)
		} else {
			js.job, js.err = compileJob(c)
		}
		if js.err != nil {
			s.log.Warn("scrape config not run", "job", js.name, "err", js.err)
		}
		jobs = append(jobs, js)
	}
	s.mu.Lock()
	s.jobs = jobs
	s.dirty = true
	s.mu.Unlock()
	select {
	case s.update <- struct{}{}:
	default:
	}
}

// Run discovers and scrapes until ctx ends, then stops every scrape,
// flushes what was buffered and returns nil.
func (s *Scraper) Run(ctx context.Context) error {
	disc := time.NewTicker(s.cfg.DiscoveryInterval)
	defer disc.Stop()
	flush := time.NewTicker(s.cfg.FlushInterval)
	defer flush.Stop()
	loopCtx, stopLoops := context.WithCancel(ctx)
	defer func() {
		stopLoops()
		s.wg.Wait()
		s.flush()
	}()
	s.sync(loopCtx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.update:
			s.sync(loopCtx)
		case <-disc.C:
			s.sync(loopCtx)
		case <-flush.C:
			s.flush()
		case <-s.flushc:
			s.flush()
		}
	}
}

// sync lists every job's targets and starts and stops scrape loops to
// match. A job whose listing fails keeps its running targets.
func (s *Scraper) sync(ctx context.Context) {
	s.mu.Lock()
	jobs := slices.Clone(s.jobs)
	s.mu.Unlock()
	want := map[string]*target{}
	prints := map[string]string{}
	keep := map[string]bool{} // jobs whose targets stay as they are
	for _, js := range jobs {
		if js.job == nil {
			continue
		}
		ts, truncated, err := s.disc.discover(ctx, js.job)
		s.mu.Lock()
		js.discErr, js.truncated = err, truncated
		s.mu.Unlock()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("scrape target discovery", "job", js.name, "err", err)
			}
			keep[js.name] = true
			continue
		}
		for _, t := range ts {
			want[t.key()+"\x00"+js.print] = t
			prints[t.key()+"\x00"+js.print] = js.print
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	removed := map[string]*loop{} // by target key
	for k, l := range s.loops {
		if _, ok := want[k]; ok || keep[l.t.job.name] && s.hasJobLocked(l.t.job.name, l.print) {
			continue
		}
		l.removed = true
		l.cancel()
		delete(s.loops, k)
		removed[l.t.key()] = l
		s.dirty = true
	}
	for k, t := range want {
		if _, ok := s.loops[k]; ok {
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		l := s.newLoop(t, prints[k], cancel)
		if old := removed[t.key()]; old != nil {
			// The same target (same job, URL and labels) under a changed
			// config, as after a Prometheus reload: its series go on, and
			// those the new config no longer yields are marked at its
			// first scrape. (end reads replaced under s.mu, so it sees it.)
			old.replaced, l.prev = true, old
			delete(removed, t.key())
		}
		s.loops[k] = l
		s.dirty = true
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.run(lctx, k, l)
		}()
	}
}

func (s *Scraper) newLoop(t *target, print string, cancel context.CancelFunc) *loop {
	return &loop{t: t, print: print, cancel: cancel, status: TargetStatus{Job: t.job.name, URL: t.url, Labels: t.labels.Map(), Health: HealthUnknown},
		stale: staleness.New(staleness.Config{MaxSeries: s.cfg.MaxStaleSeries}), done: make(chan struct{})}
}

func (s *Scraper) hasJobLocked(name, print string) bool {
	for _, js := range s.jobs {
		if js.name == name && js.print == print {
			return true
		}
	}
	return false
}

// run scrapes one target every interval, the first time after an offset
// that spreads targets over the interval (as Prometheus does).
func (s *Scraper) run(ctx context.Context, key string, l *loop) {
	defer close(l.done)
	if p := l.prev; p != nil {
		<-p.done // soon: p is cancelled
		l.stale, l.lastMs, l.prev = p.stale, p.lastMs, nil
	}
	iv := l.t.job.interval
	h := fnv.New64a()
	_, _ = io.WriteString(h, key)
	offset := time.Duration(h.Sum64() % uint64(iv))
	timer := time.NewTimer(offset)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			s.end(l)
			return
		case <-timer.C:
		}
		timer.Reset(iv)
		s.scrapeAndBuffer(ctx, l)
	}
}

// end buffers staleness markers for every series of a loop that sync
// removed (its target is gone, or its config went or changed so that the
// target is no longer one of it), at the removal time. A loop stopped
// because the scraper stops (the agent shuts down) marks nothing: its
// series did not end; nor does one replaced by a loop of the same target
// (which takes its tracker over).
func (s *Scraper) end(l *loop) {
	s.mu.Lock()
	removed := l.removed && !l.replaced
	s.mu.Unlock()
	if !removed || l.stale == nil || l.stale.Len() == 0 {
		return
	}
	// After the last scrape's samples even if the clock did not move.
	ms := max(s.cfg.Now().UnixMilli(), l.lastMs+1)
	markers := l.stale.All(ms)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.StaleMarkers += uint64(len(markers))
	s.bufferLocked(markers, l.status.Job, l.status.URL)
}

// scrapeAndBuffer scrapes once and buffers the series.
func (s *Scraper) scrapeAndBuffer(ctx context.Context, l *loop) {
	start := s.cfg.Now()
	res, err := s.scrape(ctx, l.t, start)
	if ctx.Err() != nil {
		return // stopped while scraping: not the target's fault
	}
	dur := s.cfg.Now().Sub(start)
	st := TargetStatus{Job: l.t.job.name, URL: l.t.url, Labels: l.status.Labels, Health: HealthUp, LastScrape: start, LastDuration: dur}
	up := 1.0
	if err != nil {
		up = 0
		st.Health, st.LastError = HealthDown, truncUTF8(err.Error(), telemetryv1.MaxHelpBytes)
		res = &parsed{scraped: res.scraped}
	}
	st.Samples, st.Invalid = res.kept, res.invalid
	ms := start.UnixMilli()
	report := func(name string, v float64) {
		lb := labels.NewBuilder(l.t.labels)
		lb.Set(telemetryv1.MetricNameLabel, name)
		if ws, ok := wireSeries(lb.Labels()); ok {
			ws.Samples = []*telemetryv1.Sample{{TimestampMs: ms, Value: v}}
			res.series = append(res.series, ws)
		}
	}
	report("up", up)
	report("scrape_duration_seconds", dur.Seconds())
	report("scrape_samples_scraped", float64(res.scraped))
	report("scrape_samples_post_metric_relabeling", float64(res.kept))
	report("scrape_samples_invalid", float64(res.invalid))
	markers, untracked := s.track(l, res, ms)
	res.series = append(res.series, markers...)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Scrapes++
	s.stats.StaleMarkers += uint64(len(markers))
	s.stats.UntrackedSeries += uint64(untracked)
	if err != nil {
		s.stats.Failures++
	}
	if l.status.Health != st.Health || l.status.LastError != st.LastError {
		s.dirty = true
	}
	l.status = st
	s.bufferLocked(res.series, st.Job, st.URL)
	for _, m := range res.metadata {
		if s.sentMeta[m.Metric] != m.String() {
			s.metadata[m.Metric] = m
		}
	}
	if len(s.buffer) >= s.cfg.MaxBatchSeries {
		select {
		case s.flushc <- struct{}{}:
		default:
		}
	}
}

// track records the series of a scrape (those without a timestamp of the
// exposition) as seen and returns staleness markers at ms for the series
// of the previous scrape it does not have. A failed scrape has only the
// synthetic up and scrape_* series: every other series is marked.
func (s *Scraper) track(l *loop, res *parsed, ms int64) (markers []*telemetryv1.Series, untracked int) {
	if l.stale == nil {
		l.stale = staleness.New(staleness.Config{MaxSeries: s.cfg.MaxStaleSeries})
	}
	for i, ser := range res.series {
		if i < len(res.stamped) && res.stamped[i] {
			continue
		}
		l.stale.Seen(ser.Labels)
	}
	markers = l.stale.End(ms)
	l.lastMs = ms
	return markers, l.stale.Untracked()
}

// bufferLocked buffers series for the next flush, or drops and counts
// them all if the buffer has no room.
func (s *Scraper) bufferLocked(series []*telemetryv1.Series, job, url string) {
	if len(s.buffer)+len(series) > s.cfg.MaxBufferedSeries {
		s.stats.DroppedSeries += uint64(len(series))
		s.log.Warn("scrape dropped: the buffer of series waiting to be sent is full", "job", job, "url", url, "series", len(series), "buffered", len(s.buffer))
		return
	}
	s.buffer = append(s.buffer, series...)
}

// scrape fetches and parses one target. On error the result holds only
// the count of samples seen.
func (s *Scraper) scrape(ctx context.Context, t *target, now time.Time) (*parsed, error) {
	ctx, cancel := context.WithTimeout(ctx, t.job.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
	if err != nil {
		return &parsed{}, err
	}
	req.Header.Set("Accept", acceptHeader)
	req.Header.Set("User-Agent", "tether-agent")
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.FormatFloat(t.job.timeout.Seconds(), 'f', -1, 64))
	resp, err := s.http.Do(req)
	if err != nil {
		return &parsed{}, scrapeErr(ctx, t, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &parsed{}, fmt.Errorf("server returned HTTP status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.cfg.MaxBodyBytes+1))
	if err != nil {
		return &parsed{}, scrapeErr(ctx, t, err)
	}
	if int64(len(body)) > s.cfg.MaxBodyBytes {
		return &parsed{}, fmt.Errorf("response body is over the limit of %d bytes; the scrape is refused", s.cfg.MaxBodyBytes)
	}
	res, err := parse(parseInput{body: body, contentType: resp.Header.Get("Content-Type"), target: t.labels, relabel: t.job.metricRelabel,
		sampleLimit: t.job.sampleLimit, defaultMs: now.UnixMilli(), cluster: s.cfg.Cluster})
	if err != nil {
		return &parsed{}, err
	}
	return res, nil
}

func scrapeErr(ctx context.Context, t *target, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("scrape of %s cut after its timeout of %s", t.url, t.job.timeout)
	}
	return err
}

// flush emits the buffered series.
func (s *Scraper) flush() {
	s.mu.Lock()
	buf := s.buffer
	s.buffer = nil
	if len(buf) == 0 && !s.dirty && len(s.metadata) == 0 {
		s.mu.Unlock()
		return
	}
	s.dirty = false
	health := s.healthLocked()
	meta := make([]*telemetryv1.MetricMetadata, 0, len(s.metadata))
	for _, n := range sortedKeys(s.metadata) {
		m := s.metadata[n]
		if len(meta) < telemetryv1.MaxMetadata {
			meta = append(meta, m)
		}
	}
	s.metadata = map[string]*telemetryv1.MetricMetadata{}
	if now := s.cfg.Now(); now.Sub(s.metaFrom) >= s.cfg.MetadataResendInterval {
		// The next scrapes find every family unsent and send it again.
		s.sentMeta, s.metaFrom = map[string]string{}, now
	}
	s.mu.Unlock()

	sent := 0
	for first := true; first || len(buf) > 0; first = false {
		n := min(len(buf), s.cfg.MaxBatchSeries)
		// The scraper's health list is the whole of it, empty or not:
		// the hub replaces the cluster's targets with it.
		b := &telemetryv1.MetricBatch{Series: buf[:n], Targets: health, TargetsReported: true}
		if first {
			b.Metadata = meta
		}
		buf = buf[n:]
		err := s.cfg.Emit(b)
		s.mu.Lock()
		s.stats.Batches++
		if err != nil {
			s.stats.EmitErrors++
		} else if first {
			if len(s.sentMeta) > 4*telemetryv1.MaxMetadata {
				s.sentMeta = map[string]string{}
			}
			for _, m := range meta {
				s.sentMeta[m.Metric] = m.String()
			}
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Warn("metric batch refused by the telemetry sink; dropped", "series", n, "err", err)
		} else {
			sent += n
		}
	}
	s.log.Debug("scrape batches emitted", "series", sent)
}

// healthLocked is every target's health, as the wire has it.
func (s *Scraper) healthLocked() []*telemetryv1.TargetHealth {
	var out []*telemetryv1.TargetHealth
	for _, st := range s.targetsLocked() {
		if len(out) == telemetryv1.MaxTargets {
			break
		}
		th := &telemetryv1.TargetHealth{Job: st.Job, Url: st.URL, Health: st.Health, LastError: st.LastError,
			LastDurationMs: st.LastDuration.Milliseconds(), Samples: int64(st.Samples)}
		if !st.LastScrape.IsZero() {
			th.LastScrapeMs = st.LastScrape.UnixMilli()
		}
		out = append(out, th)
	}
	return out
}

// Targets returns every target's last scrape, and an entry for each
// config that does not run or whose discovery fails, sorted by job and
// URL.
func (s *Scraper) Targets() []TargetStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.targetsLocked()
}

func (s *Scraper) targetsLocked() []TargetStatus {
	var out []TargetStatus
	for _, l := range s.loops {
		out = append(out, l.status)
	}
	for _, js := range s.jobs {
		var msg string
		switch {
		case js.err != nil:
			msg = js.err.Error()
		case js.discErr != nil:
			msg = "discovery: " + js.discErr.Error()
		case js.truncated:
			msg = fmt.Sprintf("more than %d targets found; only the first %d are scraped", s.cfg.MaxTargetsPerConfig, s.cfg.MaxTargetsPerConfig)
		default:
			continue
		}
		out = append(out, TargetStatus{Job: js.name, Health: HealthUnknown, LastError: truncUTF8(msg, telemetryv1.MaxHelpBytes)})
	}
	slices.SortFunc(out, func(a, b TargetStatus) int {
		return cmp.Or(strings.Compare(a.Job, b.Job), strings.Compare(a.URL, b.URL), strings.Compare(labels.FromMap(a.Labels).String(), labels.FromMap(b.Labels).String()))
	})
	return out
}

// Stats returns the counters.
func (s *Scraper) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
