package telemetry

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// The query parameters of the Prometheus HTTP API, parsed as Prometheus
// parses them: a time is a Unix timestamp in (fractional) seconds or an
// RFC 3339 date; a duration is (fractional) seconds or a Prometheus
// duration such as 5m or 1h30m.

// minTime and maxTime stand for an absent start and end. They are far
// enough inside int64 milliseconds that arithmetic on them cannot
// overflow.
var (
	minTime = time.UnixMilli(math.MinInt64 / 4).UTC()
	maxTime = time.UnixMilli(math.MaxInt64 / 4).UTC()
)

// Prometheus' own spellings of the open start and end (clients built on
// its Go client send them).
const (
	promMinTime = "-292273086-05-16T16:47:06Z"
	promMaxTime = "292277025-08-18T07:12:54.999999999Z"
)

// parseTime parses a time parameter.
func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("empty time")
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
		}
		ms := math.Round(f * 1000)
		if ms < float64(minTime.UnixMilli()) || ms > float64(maxTime.UnixMilli()) {
			return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp: out of range", s)
		}
		return time.UnixMilli(int64(ms)).UTC(), nil
	}
	switch s {
	case promMinTime:
		return minTime, nil
	case promMaxTime:
		return maxTime, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
	}
	if t.Before(minTime) || t.After(maxTime) {
		return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp: out of range", s)
	}
	return t.UTC(), nil
}

// parseTimeOr parses an optional time parameter.
func parseTimeOr(s string, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	return parseTime(s)
}

// parseDuration parses a duration parameter.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		ns := f * float64(time.Second)
		if math.IsNaN(ns) || ns >= math.MaxInt64 || ns <= math.MinInt64 {
			return 0, fmt.Errorf("cannot parse %q to a valid duration. It overflows int64", s)
		}
		return time.Duration(ns), nil
	}
	d, err := model.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
	}
	return time.Duration(d), nil
}

// parseLimit parses a limit parameter: 0 (or absent) means none.
func parseLimit(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("limit %q: want a non-negative integer", s)
	}
	return n, nil
}

// parseMatchers parses match[] selectors; each must hold a matcher that
// does not match the empty string (Prometheus' rule: a selector may not
// select every series).
func parseMatchers(p parser.Parser, sels []string) ([][]*labels.Matcher, error) {
	out := make([][]*labels.Matcher, 0, len(sels))
	for _, s := range sels {
		ms, err := p.ParseMetricSelector(s)
		if err != nil {
			return nil, err
		}
		nonEmpty := false
		for _, m := range ms {
			if !m.Matches("") {
				nonEmpty = true
				break
			}
		}
		if !nonEmpty {
			return nil, fmt.Errorf("match[] must contain at least one non-empty matcher: %q", s)
		}
		out = append(out, ms)
	}
	return out, nil
}
