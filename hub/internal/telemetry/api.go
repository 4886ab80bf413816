package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// APIConfig configures the Prometheus HTTP API.
type APIConfig struct {
	// DB answers the queries (required; *DB is one).
	DB storage.Queryable
	// Metadata answers /api/v1/metadata; nil answers an empty map.
	Metadata MetadataSource
	// Now is the hub's clock (the default evaluation time); nil means
	// time.Now.
	Now func() time.Time
	// MaxSamples bounds the samples one query holds in memory.
	MaxSamples int
	// Timeout bounds one query; a request's timeout parameter may only
	// shorten it.
	Timeout time.Duration
	// LookbackDelta is how far back an instant selector looks.
	LookbackDelta time.Duration
	// MaxPoints bounds the steps of a range query, per series.
	MaxPoints int
	// MaxFormBytes bounds a POST form body.
	MaxFormBytes int64
	// MaxConcurrent bounds the queries evaluated at once; more wait (up
	// to their timeout).
	MaxConcurrent int
	// Version is the hub's version, shown in buildinfo's revision.
	Version string
	Logger  *slog.Logger
}

// MetadataSource is what the API asks for /api/v1/metadata (*Receiver is
// one).
type MetadataSource interface {
	Metadata(metric string, limit, limitPerMetric int) map[string][]Metadata
}

// API defaults: Prometheus' own where it has one.
const (
	DefaultMaxSamples    = 50_000_000
	DefaultQueryTimeout  = 2 * time.Minute
	DefaultLookbackDelta = 5 * time.Minute
	DefaultMaxPoints     = 11_000
	DefaultMaxFormBytes  = 4 << 20
	DefaultMaxConcurrent = 8
)

// PrometheusVersion is the Prometheus release whose PromQL engine the
// hub runs; /api/v1/status/buildinfo reports it, so clients such as
// Grafana turn on the features that release has.
const PrometheusVersion = "3.16.0"

// DefaultAPIConfig returns the defaults; DB must still be set.
func DefaultAPIConfig() APIConfig {
	return APIConfig{
		MaxSamples: DefaultMaxSamples, Timeout: DefaultQueryTimeout, LookbackDelta: DefaultLookbackDelta,
		MaxPoints: DefaultMaxPoints, MaxFormBytes: DefaultMaxFormBytes, MaxConcurrent: DefaultMaxConcurrent,
	}
}

// Validate checks c.
func (c *APIConfig) Validate() error {
	switch {
	case c.DB == nil:
		return errors.New("telemetry: APIConfig.DB is required")
	case c.MaxSamples <= 0 || c.MaxPoints <= 0 || c.MaxFormBytes <= 0 || c.MaxConcurrent <= 0:
		return fmt.Errorf("telemetry: APIConfig: MaxSamples %d, MaxPoints %d, MaxFormBytes %d and MaxConcurrent %d must be positive", c.MaxSamples, c.MaxPoints, c.MaxFormBytes, c.MaxConcurrent)
	case c.Timeout <= 0 || c.LookbackDelta <= 0:
		return fmt.Errorf("telemetry: APIConfig: Timeout %s and LookbackDelta %s must be positive", c.Timeout, c.LookbackDelta)
	}
	return nil
}

// API serves the Prometheus HTTP API (the query side) under /api/v1/.
type API struct {
	cfg    APIConfig
	engine *promql.Engine
	parser parser.Parser
	mux    *http.ServeMux
	// slots holds a token per query being evaluated.
	slots chan struct{}
}

// NewAPI returns the Prometheus HTTP API for cfg.
func NewAPI(cfg APIConfig) (*API, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := parser.NewParser(parser.Options{})
	a := &API{cfg: cfg, parser: p, slots: make(chan struct{}, cfg.MaxConcurrent)}
	a.engine = promql.NewEngine(promql.EngineOpts{
		Logger:                   cfg.Logger,
		MaxSamples:               cfg.MaxSamples,
		Timeout:                  cfg.Timeout,
		LookbackDelta:            cfg.LookbackDelta,
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
		Parser:                   p,
	})
	m := http.NewServeMux()
	for path, h := range map[string]apiFunc{
		"/api/v1/query":               a.query,
		"/api/v1/query_range":         a.queryRange,
		"/api/v1/series":              a.series,
		"/api/v1/labels":              a.labelNames,
		"/api/v1/label/{name}/values": a.labelValues,
		"/api/v1/query_exemplars":     a.exemplars,
		"/api/v1/format_query":        a.formatQuery,
	} {
		m.Handle("GET "+path, a.wrap(h))
		m.Handle("POST "+path, a.wrap(h))
	}
	m.Handle("GET /api/v1/metadata", a.wrap(a.metadata))
	m.Handle("GET /api/v1/status/buildinfo", a.wrap(a.buildInfo))
	m.Handle("/api/v1/", a.wrap(func(r *http.Request) (any, annotations.Annotations, *apiError) {
		return nil, nil, &apiError{errorNotFound, fmt.Errorf("%s %s is not served by this hub", r.Method, r.URL.Path)}
	}))
	a.mux = m
	return a, nil
}

// ServeHTTP serves the API.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Close stops the query engine.
func (a *API) Close() error { return a.engine.Close() }

type apiFunc func(r *http.Request) (data any, warnings annotations.Annotations, err *apiError)

func (a *API) wrap(f apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxFormBytes)
		}
		if err := r.ParseForm(); err != nil {
			WriteError(w, ErrorBadData, fmt.Errorf("error parsing form values: %w", err))
			return
		}
		data, warns, aerr := f(r)
		if aerr != nil {
			if aerr.typ == errorInternal {
				a.cfg.Logger.Error("prometheus API", "path", r.URL.Path, "err", aerr.err)
			}
			WriteError(w, aerr.typ, aerr.err)
			return
		}
		writeSuccess(w, data, warns, r.Form.Get("query"))
	})
}

// Error types of the Prometheus HTTP API.
const (
	ErrorBadData      = "bad_data"
	ErrorExecution    = "execution"
	ErrorTimeout      = "timeout"
	ErrorCanceled     = "canceled"
	ErrorInternal     = "internal"
	ErrorNotFound     = "not_found"
	ErrorUnauthorized = "unauthorized"
	ErrorForbidden    = "forbidden"
	errorBadData      = ErrorBadData
	errorExec         = ErrorExecution
	errorTimeout      = ErrorTimeout
	errorCanceled     = ErrorCanceled
	errorInternal     = ErrorInternal
	errorNotFound     = ErrorNotFound
)

type apiError struct {
	typ string
	err error
}

func badData(format string, args ...any) *apiError {
	return &apiError{errorBadData, fmt.Errorf(format, args...)}
}

// statusOf is the HTTP status Prometheus answers for an error type.
func statusOf(typ string) int {
	switch typ {
	case ErrorBadData:
		return http.StatusBadRequest
	case ErrorExecution:
		return http.StatusUnprocessableEntity
	case ErrorCanceled, ErrorTimeout:
		return http.StatusServiceUnavailable
	case ErrorNotFound:
		return http.StatusNotFound
	case ErrorUnauthorized:
		return http.StatusUnauthorized
	case ErrorForbidden:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// queryError classifies an error of the engine as Prometheus does.
func queryError(err error) *apiError {
	var (
		canceled promql.ErrQueryCanceled
		timeout  promql.ErrQueryTimeout
		st       promql.ErrStorage
	)
	switch {
	case errors.As(err, &canceled), errors.Is(err, context.Canceled):
		return &apiError{errorCanceled, err}
	case errors.As(err, &timeout), errors.Is(err, context.DeadlineExceeded):
		return &apiError{errorTimeout, err}
	case errors.As(err, &st):
		return &apiError{errorInternal, err}
	}
	return &apiError{errorExec, err}
}

// queryCtx applies the request's timeout parameter.
func (a *API) queryCtx(r *http.Request) (context.Context, context.CancelFunc, *apiError) {
	ctx := r.Context()
	if to := r.Form.Get("timeout"); to != "" {
		d, err := parseDuration(to)
		if err != nil {
			return nil, nil, badData("invalid parameter \"timeout\": %v", err)
		}
		if d <= 0 {
			return nil, nil, badData("invalid parameter \"timeout\": must be positive")
		}
		c, cancel := context.WithTimeout(ctx, d)
		return c, cancel, nil
	}
	c, cancel := context.WithCancel(ctx)
	return c, cancel, nil
}

func (a *API) queryOpts(r *http.Request) (promql.QueryOpts, *apiError) {
	var lookback time.Duration
	if s := r.Form.Get("lookback_delta"); s != "" {
		d, err := parseDuration(s)
		if err != nil || d < 0 {
			return nil, badData("error parsing lookback delta duration: %v", errOr(err, "negative"))
		}
		lookback = d
	}
	return promql.NewPrometheusQueryOpts(false, lookback, nil), nil
}

func errOr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}

func (a *API) query(r *http.Request) (any, annotations.Annotations, *apiError) {
	ts, err := parseTimeOr(r.Form.Get("time"), a.cfg.Now())
	if err != nil {
		return nil, nil, badData("invalid parameter \"time\": %v", err)
	}
	qs := r.Form.Get("query")
	if qs == "" {
		return nil, nil, badData("invalid parameter \"query\": query must not be empty")
	}
	opts, aerr := a.queryOpts(r)
	if aerr != nil {
		return nil, nil, aerr
	}
	ctx, cancel, aerr := a.queryCtx(r)
	if aerr != nil {
		return nil, nil, aerr
	}
	defer cancel()
	q, err := a.engine.NewInstantQuery(ctx, a.cfg.DB, opts, qs, ts)
	if err != nil {
		return nil, nil, badData("invalid parameter \"query\": %v", err)
	}
	return a.exec(ctx, q)
}

func (a *API) queryRange(r *http.Request) (any, annotations.Annotations, *apiError) {
	start, err := parseTime(r.Form.Get("start"))
	if err != nil {
		return nil, nil, badData("invalid parameter \"start\": %v", err)
	}
	end, err := parseTime(r.Form.Get("end"))
	if err != nil {
		return nil, nil, badData("invalid parameter \"end\": %v", err)
	}
	if end.Before(start) {
		return nil, nil, badData("invalid parameter \"end\": end timestamp must not be before start time")
	}
	step, err := parseDuration(r.Form.Get("step"))
	if err != nil {
		return nil, nil, badData("invalid parameter \"step\": %v", err)
	}
	if step <= 0 {
		return nil, nil, badData("invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer")
	}
	if float64(end.Sub(start))/float64(step) > float64(a.cfg.MaxPoints) {
		return nil, nil, badData("exceeded maximum resolution of %s points per timeseries. Try decreasing the query resolution (?step=XX)", thousands(a.cfg.MaxPoints))
	}
	qs := r.Form.Get("query")
	if qs == "" {
		return nil, nil, badData("invalid parameter \"query\": query must not be empty")
	}
	opts, aerr := a.queryOpts(r)
	if aerr != nil {
		return nil, nil, aerr
	}
	ctx, cancel, aerr := a.queryCtx(r)
	if aerr != nil {
		return nil, nil, aerr
	}
	defer cancel()
	q, err := a.engine.NewRangeQuery(ctx, a.cfg.DB, opts, qs, start, end, step)
	if err != nil {
		return nil, nil, badData("invalid parameter \"query\": %v", err)
	}
	return a.exec(ctx, q)
}

// exec runs q and encodes its result before closing it (the result's
// memory goes back to the engine's pools on Close).
func (a *API) exec(ctx context.Context, q promql.Query) (any, annotations.Annotations, *apiError) {
	defer q.Close()
	select {
	case a.slots <- struct{}{}:
		defer func() { <-a.slots }()
	case <-ctx.Done():
		return nil, nil, queryError(fmt.Errorf("waiting for one of %d query slots: %w", cap(a.slots), ctx.Err()))
	}
	res := q.Exec(ctx)
	if res.Err != nil {
		return nil, res.Warnings, queryError(res.Err)
	}
	b, err := encodeValue(res.Value)
	if err != nil {
		return nil, res.Warnings, &apiError{errorInternal, err}
	}
	return rawJSON(b), res.Warnings, nil
}

// thousands formats n as Prometheus does in its resolution error: 11,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// selectRange parses start and end for series, labels and label values:
// absent means open.
func selectRange(r *http.Request) (time.Time, time.Time, *apiError) {
	start, err := parseTimeOr(r.Form.Get("start"), minTime)
	if err != nil {
		return time.Time{}, time.Time{}, badData("invalid parameter \"start\": %v", err)
	}
	end, err := parseTimeOr(r.Form.Get("end"), maxTime)
	if err != nil {
		return time.Time{}, time.Time{}, badData("invalid parameter \"end\": %v", err)
	}
	if end.Before(start) {
		return time.Time{}, time.Time{}, badData("invalid parameter \"end\": end timestamp must not be before start time")
	}
	return start, end, nil
}

func (a *API) querier(r *http.Request) (storage.Querier, *apiError) {
	start, end, aerr := selectRange(r)
	if aerr != nil {
		return nil, aerr
	}
	q, err := a.cfg.DB.Querier(start.UnixMilli(), end.UnixMilli())
	if err != nil {
		return nil, &apiError{errorExec, err}
	}
	return q, nil
}

// truncated is the warning Prometheus gives when limit cut a result.
var truncated = annotations.New().Add(errors.New("results truncated due to limit"))

func (a *API) series(r *http.Request) (any, annotations.Annotations, *apiError) {
	if len(r.Form["match[]"]) == 0 {
		return nil, nil, badData("no match[] parameter provided")
	}
	sets, err := parseMatchers(a.parser, r.Form["match[]"])
	if err != nil {
		return nil, nil, badData("%v", err)
	}
	limit, err := parseLimit(r.Form.Get("limit"))
	if err != nil {
		return nil, nil, badData("%v", err)
	}
	start, end, aerr := selectRange(r)
	if aerr != nil {
		return nil, nil, aerr
	}
	q, aerr := a.querier(r)
	if aerr != nil {
		return nil, nil, aerr
	}
	defer q.Close()
	hints := &storage.SelectHints{Start: start.UnixMilli(), End: end.UnixMilli(), Func: "series"}
	var ss storage.SeriesSet
	if len(sets) == 1 {
		ss = q.Select(r.Context(), false, hints, sets[0]...)
	} else {
		all := make([]storage.SeriesSet, 0, len(sets))
		for _, ms := range sets {
			all = append(all, q.Select(r.Context(), true, hints, ms...))
		}
		ss = storage.NewMergeSeriesSet(all, 0, storage.ChainedSeriesMerge)
	}
	out := []labels.Labels{}
	var warns annotations.Annotations
	for ss.Next() {
		if limit > 0 && len(out) >= limit {
			warns = warns.Merge(truncated)
			break
		}
		out = append(out, ss.At().Labels())
	}
	warns = warns.Merge(ss.Warnings())
	if err := ss.Err(); err != nil {
		return nil, warns, &apiError{errorExec, err}
	}
	return out, warns, nil
}

func (a *API) labelNames(r *http.Request) (any, annotations.Annotations, *apiError) {
	return a.labelStrings(r, func(q storage.Querier, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
		return q.LabelNames(r.Context(), &storage.LabelHints{}, ms...)
	})
}

func (a *API) labelValues(r *http.Request) (any, annotations.Annotations, *apiError) {
	name := r.PathValue("name")
	if !model.LegacyValidation.IsValidLabelName(name) {
		return nil, nil, badData("invalid label name: %q", name)
	}
	return a.labelStrings(r, func(q storage.Querier, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
		return q.LabelValues(r.Context(), name, &storage.LabelHints{}, ms...)
	})
}

// labelStrings answers /labels and /label/NAME/values: fetch runs once per
// match[] selector (once with none), and the union is sorted, deduplicated
// and cut to limit.
func (a *API) labelStrings(r *http.Request, fetch func(storage.Querier, []*labels.Matcher) ([]string, annotations.Annotations, error)) (any, annotations.Annotations, *apiError) {
	limit, err := parseLimit(r.Form.Get("limit"))
	if err != nil {
		return nil, nil, badData("%v", err)
	}
	sets, err := parseMatchers(a.parser, r.Form["match[]"])
	if err != nil {
		return nil, nil, badData("%v", err)
	}
	q, aerr := a.querier(r)
	if aerr != nil {
		return nil, nil, aerr
	}
	defer q.Close()
	var out []string
	var warns annotations.Annotations
	if len(sets) == 0 {
		sets = [][]*labels.Matcher{nil}
	}
	for _, ms := range sets {
		ss, w, err := fetch(q, ms)
		warns = warns.Merge(w)
		if err != nil {
			return nil, warns, &apiError{errorExec, err}
		}
		out = append(out, ss...)
	}
	return limitStrings(out, limit, &warns), warns, nil
}

// limitStrings sorts and deduplicates ss, then cuts it to limit.
func limitStrings(ss []string, limit int, warns *annotations.Annotations) []string {
	sort.Strings(ss)
	ss = slices.Compact(ss)
	if ss == nil {
		ss = []string{}
	}
	if limit > 0 && len(ss) > limit {
		ss = ss[:limit]
		*warns = warns.Merge(truncated)
	}
	return ss
}

func (a *API) metadata(r *http.Request) (any, annotations.Annotations, *apiError) {
	limit, err := parseLimit(r.Form.Get("limit"))
	if err != nil {
		return nil, nil, badData("%v", err)
	}
	per, err := parseLimit(r.Form.Get("limit_per_metric"))
	if err != nil {
		return nil, nil, badData("limit_per_metric: %v", err)
	}
	if a.cfg.Metadata == nil {
		return map[string][]Metadata{}, nil, nil
	}
	return a.cfg.Metadata.Metadata(r.Form.Get("metric"), limit, per), nil, nil
}

// BuildInfo is the answer of /api/v1/status/buildinfo.
type BuildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Branch    string `json:"branch"`
	BuildUser string `json:"buildUser"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
}

func (a *API) buildInfo(*http.Request) (any, annotations.Annotations, *apiError) {
	return BuildInfo{
		Version: PrometheusVersion, Revision: "tether-" + a.cfg.Version, Branch: "tether",
		BuildUser: "tether", GoVersion: runtime.Version(),
	}, nil, nil
}

// exemplars: the hub stores no exemplars; it checks the parameters and
// answers an empty list, as a Prometheus without exemplar storage does.
func (a *API) exemplars(r *http.Request) (any, annotations.Annotations, *apiError) {
	if _, _, aerr := selectRange(r); aerr != nil {
		return nil, nil, aerr
	}
	if _, err := a.parser.ParseExpr(r.Form.Get("query")); err != nil {
		return nil, nil, badData("invalid parameter \"query\": %v", err)
	}
	return []struct{}{}, nil, nil
}

func (a *API) formatQuery(r *http.Request) (any, annotations.Annotations, *apiError) {
	expr, err := a.parser.ParseExpr(r.Form.Get("query"))
	if err != nil {
		return nil, nil, badData("invalid parameter \"query\": %v", err)
	}
	return expr.Pretty(0), nil, nil
}

// maxWarnings bounds the warnings and the infos of one answer.
const maxWarnings = 10
