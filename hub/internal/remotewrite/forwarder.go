package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/golang/snappy"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// Endpoint is one store the hub writes to.
type Endpoint struct {
	// Name identifies the endpoint in status, series and its cursor file
	// ([A-Za-z0-9_.-]); "" means one derived from the URL's host.
	Name string
	// URL is the store's remote-write URL (http or https), e.g.
	// http://prometheus:9090/api/v1/write.
	URL string
	// BearerTokenFile, read on every request, holds a bearer token.
	BearerTokenFile string
	// BasicAuthUser and BasicAuthPasswordFile set basic auth.
	BasicAuthUser         string
	BasicAuthPasswordFile string
	// CAFile verifies an https store's certificate; "" means the system
	// roots.
	CAFile string
	// Timeout bounds one request; 0 means 30s.
	Timeout time.Duration
}

// Config configures a Forwarder.
type Config struct {
	// Dir holds the queue (required); the server uses
	// <data dir>/remote-write.
	Dir       string
	Endpoints []Endpoint
	// MaxSamplesPerSend bounds one request.
	MaxSamplesPerSend int
	// SegmentBytes is the size at which a queue segment file is closed.
	SegmentBytes int64
	// MaxQueueBytes bounds the queue on disk; above it the oldest samples
	// are dropped (and counted). 0 means no bound.
	MaxQueueBytes int64
	// MinBackoff and MaxBackoff bound the wait between retries.
	MinBackoff, MaxBackoff time.Duration
	// StatusInterval is how often the queue's health is written as hub
	// series (tether_remote_write_*); 0 means never.
	StatusInterval time.Duration
	Logger         *slog.Logger
	// Now is the clock of the status series; nil means time.Now.
	Now func() time.Time
	// ExternalLabels are added to every series sent that does not have
	// the label already (Prometheus' global.external_labels: the
	// series' own value wins). They are added when a request is built,
	// not when samples are queued, so the queue and the TSDB hold series
	// as agents sent them and a changed set applies to what is still
	// queued.
	ExternalLabels labels.Labels
}

// CheckExternalLabel reports why name=value cannot be one of the hub's
// external labels (Config.ExternalLabels; the hub's alerts carry the same
// set), or nil.
func CheckExternalLabel(name, value string) error {
	switch {
	case strings.HasPrefix(name, "__"):
		return fmt.Errorf("label name %q: names starting with __ are reserved", name)
	case !telemetryv1.ValidLabelName(name):
		return fmt.Errorf("label name %q: want [a-zA-Z_][a-zA-Z0-9_]*, at most %d bytes", name, telemetryv1.MaxLabelNameBytes)
	case name == telemetryv1.ClusterLabel:
		// Every agent series has its own; an external one would never
		// show, or name the hub where a cluster is expected.
		return fmt.Errorf("label name %q: it is the per-cluster label agents' series carry; pick another name for the hub (e.g. region or hub)", name)
	case value == "":
		return fmt.Errorf("label %s: the value is empty", name)
	case !utf8.ValidString(value):
		return fmt.Errorf("label %s: the value is not valid UTF-8", name)
	}
	return nil
}

// DefaultConfig returns the defaults: 5,000 samples a request, 64 MiB
// segments, a 10 GiB queue, retries from 100ms to 30s, status every 15s.
func DefaultConfig() Config {
	return Config{
		MaxSamplesPerSend: 5000,
		SegmentBytes:      64 << 20,
		MaxQueueBytes:     10 << 30,
		MinBackoff:        100 * time.Millisecond,
		MaxBackoff:        30 * time.Second,
		StatusInterval:    15 * time.Second,
	}
}

var endpointName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Validate checks the config and fills in derived endpoint names.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("remote write: Config.Dir is required")
	}
	if c.MaxSamplesPerSend <= 0 || c.SegmentBytes <= 0 || c.MaxQueueBytes < 0 || c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff || c.StatusInterval < 0 {
		return fmt.Errorf("remote write: bad limits: max samples per send %d, segment bytes %d, max queue bytes %d, backoff %s..%s, status interval %s",
			c.MaxSamplesPerSend, c.SegmentBytes, c.MaxQueueBytes, c.MinBackoff, c.MaxBackoff, c.StatusInterval)
	}
	var bad error
	c.ExternalLabels.Range(func(l labels.Label) {
		if err := CheckExternalLabel(l.Name, l.Value); bad == nil && err != nil {
			bad = fmt.Errorf("remote write: external label: %w", err)
		}
	})
	if bad != nil {
		return bad
	}
	seen := map[string]bool{}
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("remote write: endpoint URL %q: want http:// or https:// with a host", e.URL)
		}
		if e.Name == "" {
			e.Name = strings.NewReplacer(":", "_", "[", "", "]", "").Replace(u.Host)
			for n, base := 2, e.Name; seen[e.Name]; n++ {
				e.Name = fmt.Sprintf("%s-%d", base, n)
			}
		}
		if !endpointName.MatchString(e.Name) {
			return fmt.Errorf("remote write: endpoint name %q: want 1-64 of A-Z a-z 0-9 _ . -", e.Name)
		}
		if seen[e.Name] {
			return fmt.Errorf("remote write: endpoint name %q given twice", e.Name)
		}
		seen[e.Name] = true
		if e.BearerTokenFile != "" && (e.BasicAuthUser != "" || e.BasicAuthPasswordFile != "") {
			return fmt.Errorf("remote write: endpoint %s: bearer token and basic auth do not go together", e.Name)
		}
		for _, f := range []string{e.BearerTokenFile, e.BasicAuthPasswordFile, e.CAFile} {
			if f == "" {
				continue
			}
			if _, err := os.Stat(f); err != nil {
				return fmt.Errorf("remote write: endpoint %s: %w", e.Name, err)
			}
		}
	}
	return nil
}

// Forwarder stores through to the hub's TSDB and queues every committed
// sample for each endpoint. It is a storage.Appendable and
// storage.AppendableV2 to give the metrics receiver instead of the DB.
type Forwarder struct {
	cfg     Config
	ext     []prompb.Label // cfg.ExternalLabels, sorted by name
	next    Next
	log     *slog.Logger
	q       *queue
	senders []*sender
	closeMu sync.Mutex
	closed  bool
}

// Next is the storage the forwarder appends through to: the hub's
// *telemetry.DB.
type Next interface {
	storage.Appendable
	storage.AppendableV2
}

// New opens the queue in cfg.Dir and the endpoints' clients. With no
// endpoints it still works: appends go straight to next.
func New(cfg Config, next Next) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	f := &Forwarder{cfg: cfg, next: next, log: cfg.Logger}
	if !cfg.ExternalLabels.IsEmpty() {
		f.ext = prompb.FromLabels(cfg.ExternalLabels, nil)
	}
	if len(cfg.Endpoints) == 0 {
		return f, nil
	}
	q, err := openQueue(cfg.Dir, cfg.SegmentBytes, cfg.MaxQueueBytes)
	if err != nil {
		return nil, err
	}
	f.q = q
	keep := map[string]bool{}
	for _, e := range cfg.Endpoints {
		s, err := newSender(f, e)
		if err != nil {
			q.close()
			return nil, err
		}
		f.senders = append(f.senders, s)
		keep[q.cursorPath(e.Name)] = true
	}
	// A removed endpoint's cursor would hold its segments forever.
	for _, c := range q.cursorFiles() {
		if !keep[c] {
			_ = os.Remove(c)
		}
	}
	return f, nil
}

func clientConfig(e Endpoint) (*remote.ClientConfig, error) {
	u, err := url.Parse(e.URL)
	if err != nil {
		return nil, err
	}
	hc := config_util.DefaultHTTPClientConfig
	if e.BearerTokenFile != "" {
		hc.Authorization = &config_util.Authorization{Type: "Bearer", CredentialsFile: e.BearerTokenFile}
	}
	if e.BasicAuthUser != "" || e.BasicAuthPasswordFile != "" {
		hc.BasicAuth = &config_util.BasicAuth{Username: e.BasicAuthUser, PasswordFile: e.BasicAuthPasswordFile}
	}
	if e.CAFile != "" {
		hc.TLSConfig.CAFile = e.CAFile
	}
	if err := hc.Validate(); err != nil {
		return nil, err
	}
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &remote.ClientConfig{
		URL:              &config_util.URL{URL: u},
		Timeout:          model.Duration(timeout),
		HTTPClientConfig: hc,
		RetryOnRateLimit: true,
	}, nil
}

// Appender implements storage.Appendable.
func (f *Forwarder) Appender(ctx context.Context) storage.Appender {
	a := f.next.Appender(ctx)
	if f.q == nil {
		return a
	}
	return &appender{Appender: a, b: batch{f: f}}
}

// AppenderV2 implements storage.AppendableV2.
func (f *Forwarder) AppenderV2(ctx context.Context) storage.AppenderV2 {
	a := f.next.AppenderV2(ctx)
	if f.q == nil {
		return a
	}
	return &appenderV2{AppenderV2: a, b: batch{f: f}}
}

// Run sends the queue to every endpoint until ctx is done.
func (f *Forwarder) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, s := range f.senders {
		wg.Go(func() { s.run(ctx) })
	}
	if f.cfg.StatusInterval > 0 && len(f.senders) > 0 {
		wg.Go(func() { f.writeStatusLoop(ctx) })
	}
	wg.Wait()
	return nil
}

// Close syncs and closes the queue; call it after Run has returned.
func (f *Forwarder) Close() error {
	f.closeMu.Lock()
	defer f.closeMu.Unlock()
	if f.closed || f.q == nil {
		return nil
	}
	f.closed = true
	return f.q.close()
}

// Status is one endpoint's queue health.
type Status struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// Pending samples are stored and not yet accepted by the endpoint;
	// PendingBytes is their size in the queue.
	Pending      uint64 `json:"pending"`
	PendingBytes int64  `json:"pendingBytes"`
	// Since the hub started: samples accepted, refused by the store (a
	// 4xx answer; they are not retried), dropped by the queue quota, and
	// requests retried.
	Sent    uint64 `json:"sent"`
	Failed  uint64 `json:"failed"`
	Dropped uint64 `json:"dropped"`
	Retries uint64 `json:"retries"`
	// LastError is the last failed request's error, until one succeeds.
	LastError     string    `json:"lastError,omitempty"`
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
	LastSendTime  time.Time `json:"lastSendTime,omitzero"`
}

// Status returns every endpoint's queue health.
func (f *Forwarder) Status() []Status {
	out := make([]Status, 0, len(f.senders))
	for _, s := range f.senders {
		out = append(out, s.status())
	}
	return out
}

// writeStatusLoop appends the status as series straight to the DB (not
// forwarded: they describe this hub's link to the stores).
func (f *Forwarder) writeStatusLoop(ctx context.Context) {
	t := time.NewTicker(f.cfg.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := f.writeStatus(ctx); err != nil {
			f.log.Warn("remote write: write status series", "err", err)
		}
	}
}

func (f *Forwarder) writeStatus(ctx context.Context) error {
	ts := f.cfg.Now().UnixMilli()
	a := f.next.Appender(ctx)
	for _, st := range f.Status() {
		for name, v := range map[string]uint64{
			"tether_remote_write_pending_samples":       st.Pending,
			"tether_remote_write_sent_samples_total":    st.Sent,
			"tether_remote_write_failed_samples_total":  st.Failed,
			"tether_remote_write_dropped_samples_total": st.Dropped,
			"tether_remote_write_retries_total":         st.Retries,
		} {
			l := labels.FromStrings(model.MetricNameLabel, name, "endpoint", st.Name)
			if _, err := a.Append(0, l, ts, float64(v)); err != nil {
				_ = a.Rollback()
				return err
			}
		}
	}
	return a.Commit()
}

// batch collects one transaction's samples, grouped into series in the
// order appended, and queues them on commit.
type batch struct {
	f       *Forwarder
	series  []prompb.TimeSeries
	lastRef storage.SeriesRef
	samples int
	// unlabelled counts appends that named their series by ref only: they
	// are stored but cannot be forwarded.
	unlabelled int
}

func (b *batch) series1(ref storage.SeriesRef, l labels.Labels) *prompb.TimeSeries {
	if ref != 0 && ref == b.lastRef && len(b.series) > 0 {
		return &b.series[len(b.series)-1]
	}
	b.lastRef = ref
	b.series = append(b.series, prompb.TimeSeries{Labels: prompb.FromLabels(l, nil)})
	return &b.series[len(b.series)-1]
}

func (b *batch) add(ref storage.SeriesRef, l labels.Labels, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram) {
	if l.IsEmpty() {
		b.unlabelled++
		return
	}
	s := b.series1(ref, l)
	switch {
	case fh != nil:
		s.Histograms = append(s.Histograms, prompb.FromFloatHistogram(t, fh))
	case h != nil:
		s.Histograms = append(s.Histograms, prompb.FromIntHistogram(t, h))
	default:
		s.Samples = append(s.Samples, prompb.Sample{Timestamp: t, Value: v})
	}
	b.samples++
}

// commit queues the batch, split into records of at most
// MaxSamplesPerSend samples.
func (b *batch) commit() error {
	if b.unlabelled > 0 {
		b.f.log.Warn("remote write: samples appended by series ref without labels are stored but not forwarded", "samples", b.unlabelled)
	}
	max := b.f.cfg.MaxSamplesPerSend
	var (
		req  prompb.WriteRequest
		n    int
		errs []error
	)
	flush := func() {
		if n == 0 {
			return
		}
		raw, err := req.Marshal()
		if err == nil {
			err = b.f.q.append(snappy.Encode(nil, raw), n)
		}
		if err != nil {
			errs = append(errs, err)
		}
		req.Timeseries, n = req.Timeseries[:0], 0
	}
	for _, s := range b.series {
		for len(s.Samples)+len(s.Histograms) > 0 {
			room := max - n
			part := prompb.TimeSeries{Labels: s.Labels}
			k := min(room, len(s.Samples))
			part.Samples, s.Samples = s.Samples[:k], s.Samples[k:]
			room -= k
			k = min(room, len(s.Histograms))
			part.Histograms, s.Histograms = s.Histograms[:k], s.Histograms[k:]
			req.Timeseries = append(req.Timeseries, part)
			n += len(part.Samples) + len(part.Histograms)
			if n >= max {
				flush()
			}
		}
	}
	flush()
	b.series = nil
	if err := errors.Join(errs...); err != nil {
		// The samples are stored; only their forwarding is lost.
		b.f.log.Error("remote write: queue samples", "samples", b.samples, "err", err)
		return nil
	}
	return nil
}

// appender appends to the DB and, once the DB has committed, queues what
// it committed.
type appender struct {
	storage.Appender
	b batch
}

func (a *appender) Append(ref storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	r, err := a.Appender.Append(ref, l, t, v)
	if err == nil {
		a.b.add(r, l, t, v, nil, nil)
	}
	return r, err
}

func (a *appender) AppendHistogram(ref storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	r, err := a.Appender.AppendHistogram(ref, l, t, h, fh)
	if err == nil {
		a.b.add(r, l, t, 0, h, fh)
	}
	return r, err
}

func (a *appender) Commit() error {
	if err := a.Appender.Commit(); err != nil {
		return err
	}
	return a.b.commit()
}

func (a *appender) Rollback() error {
	a.b.series = nil
	return a.Appender.Rollback()
}

type appenderV2 struct {
	storage.AppenderV2
	b batch
}

func (a *appenderV2) Append(ref storage.SeriesRef, l labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	r, err := a.AppenderV2.Append(ref, l, st, t, v, h, fh, opts)
	// A partial error is about exemplars; the sample is in.
	var pe *storage.AppendPartialError
	if err == nil || errors.As(err, &pe) {
		a.b.add(r, l, t, v, h, fh)
	}
	return r, err
}

func (a *appenderV2) Commit() error {
	if err := a.AppenderV2.Commit(); err != nil {
		return err
	}
	return a.b.commit()
}

func (a *appenderV2) Rollback() error {
	a.b.series = nil
	return a.AppenderV2.Rollback()
}

// Dir is where a hub with data directory dataDir keeps the queue.
func Dir(dataDir string) string { return filepath.Join(dataDir, "remote-write") }
