package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage/remote"

	"github.com/tetherfleet/tether/protocol/backoff"
)

// writeClient is what a sender needs of Prometheus' remote-write client.
type writeClient interface {
	Store(ctx context.Context, req []byte, attempt int) (remote.WriteResponseStats, error)
}

// sender sends the queue to one endpoint, from its cursor on.
type sender struct {
	f      *Forwarder
	e      Endpoint
	client writeClient
	log    *slog.Logger
	cursor string

	mu  sync.Mutex
	pos position // the first record not yet accepted
	st  Status
}

func newSender(f *Forwarder, e Endpoint) (*sender, error) {
	cc, err := clientConfig(e)
	if err != nil {
		return nil, fmt.Errorf("remote write: endpoint %s: %w", e.Name, err)
	}
	c, err := remote.NewWriteClient(e.Name, cc)
	if err != nil {
		return nil, fmt.Errorf("remote write: endpoint %s: %w", e.Name, err)
	}
	s := &sender{f: f, e: e, client: c, log: f.log.With("endpoint", e.Name), cursor: f.q.cursorPath(e.Name)}
	s.st = Status{Name: e.Name, URL: redacted(e.URL)}
	s.pos, err = readCursor(s.cursor)
	if errors.Is(err, os.ErrNotExist) {
		// A new endpoint gets what is stored from now on.
		s.pos = f.q.end()
		err = writeCursor(s.cursor, s.pos)
	}
	if err != nil {
		return nil, fmt.Errorf("remote write: endpoint %s: %w", e.Name, err)
	}
	return s, nil
}

func redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Redacted()
}

func (s *sender) status() Status {
	_, next, _ := s.f.q.state()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	if next > s.pos.seq {
		st.Pending = next - s.pos.seq
	}
	st.PendingBytes = s.f.q.pendingBytes(s.pos)
	return st
}

// run sends until ctx is done; a request in flight when it is gets
// cancelled and is sent again on the next start.
func (s *sender) run(ctx context.Context) {
	bo := backoff.New(s.f.cfg.MinBackoff, s.f.cfg.MaxBackoff)
	failing := false
	for ctx.Err() == nil {
		_, _, changed := s.f.q.state()
		s.mu.Lock()
		pos := s.pos
		s.mu.Unlock()
		recs, dropped, err := s.f.q.read(pos, s.f.cfg.MaxSamplesPerSend)
		if dropped > 0 {
			s.mu.Lock()
			s.st.Dropped += dropped
			s.mu.Unlock()
			s.log.Warn("remote write: samples dropped by the queue quota before they were sent", "samples", dropped)
		}
		if err != nil {
			// A corrupt record: skip to the next segment rather than stall.
			s.log.Error("remote write: read queue; skipping to the next segment", "err", err)
			s.advance(position{seg: pos.seg + 1, seq: pos.seq})
			continue
		}
		if len(recs) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			continue
		}
		body, samples, err := merge(recs, s.f.ext)
		last := recs[len(recs)-1].next
		if err != nil {
			s.fail(samples, err)
			s.advance(last)
			continue
		}
		for attempt := 0; ; attempt++ {
			_, err := s.client.Store(ctx, body, attempt)
			if err == nil {
				s.mu.Lock()
				s.st.Sent += uint64(samples)
				s.st.LastError, s.st.LastSendTime = "", time.Now()
				s.mu.Unlock()
				if failing {
					s.log.Info("remote write: endpoint accepts samples again", "after_attempts", attempt)
					failing = false
				}
				bo.Reset()
				break
			}
			if ctx.Err() != nil {
				return
			}
			var re remote.RecoverableError
			if !errors.As(err, &re) {
				s.fail(samples, err)
				break
			}
			s.mu.Lock()
			s.st.Retries++
			s.st.LastError, s.st.LastErrorTime = err.Error(), time.Now()
			s.mu.Unlock()
			if !failing {
				s.log.Warn("remote write: endpoint unreachable or failing; retrying with backoff, samples stay queued", "err", err)
				failing = true
			}
			if !bo.Wait(ctx) {
				return
			}
		}
		s.advance(last)
	}
}

// fail records samples the endpoint refused; they are not retried.
func (s *sender) fail(samples int, err error) {
	s.mu.Lock()
	s.st.Failed += uint64(samples)
	s.st.LastError, s.st.LastErrorTime = err.Error(), time.Now()
	s.mu.Unlock()
	s.log.Error("remote write: endpoint refused samples; they are dropped", "samples", samples, "err", err)
}

// advance moves and persists the cursor, then lets the queue delete what
// every endpoint has passed.
func (s *sender) advance(p position) {
	s.mu.Lock()
	s.pos = p
	s.mu.Unlock()
	if err := writeCursor(s.cursor, p); err != nil {
		// The samples since the last written cursor are sent again after
		// a restart; the store ignores exact duplicates.
		s.log.Warn("remote write: save cursor", "err", err)
	}
	ps := make([]position, 0, len(s.f.senders))
	for _, o := range s.f.senders {
		o.mu.Lock()
		ps = append(ps, o.pos)
		o.mu.Unlock()
	}
	s.f.q.release(ps)
}

// merge joins records into one snappy-compressed WriteRequest, with the
// external labels ext (sorted by name) added to every series.
func merge(recs []record, ext []prompb.Label) ([]byte, int, error) {
	samples := 0
	for _, r := range recs {
		samples += int(r.count)
	}
	if len(recs) == 1 && len(ext) == 0 {
		return recs[0].payload, samples, nil
	}
	var all prompb.WriteRequest
	for _, r := range recs {
		var req prompb.WriteRequest
		if err := decodePayload(r.payload, &req); err != nil {
			return nil, samples, err
		}
		all.Timeseries = append(all.Timeseries, req.Timeseries...)
	}
	if len(ext) > 0 {
		for i := range all.Timeseries {
			all.Timeseries[i].Labels = withExternal(all.Timeseries[i].Labels, ext)
		}
	}
	raw, err := all.Marshal()
	if err != nil {
		return nil, samples, err
	}
	return snappy.Encode(nil, raw), samples, nil
}

// withExternal merges the external labels ext into a series' labels ls,
// both sorted by name (the queue's series come from labels.Labels), and
// keeps the result sorted, as remote write requires. A name the series
// has keeps the series' value.
func withExternal(ls, ext []prompb.Label) []prompb.Label {
	out := make([]prompb.Label, 0, len(ls)+len(ext))
	i, j := 0, 0
	for i < len(ls) && j < len(ext) {
		switch {
		case ls[i].Name < ext[j].Name:
			out = append(out, ls[i])
			i++
		case ls[i].Name > ext[j].Name:
			out = append(out, ext[j])
			j++
		default:
			out = append(out, ls[i])
			i, j = i+1, j+1
		}
	}
	out = append(out, ls[i:]...)
	return append(out, ext[j:]...)
}

// decodePayload decodes a queue record's payload.
func decodePayload(p []byte, req *prompb.WriteRequest) error {
	n, err := snappy.DecodedLen(p)
	if err != nil {
		return fmt.Errorf("%w: %w", errCorrupt, err)
	}
	if n > maxRecord*4 {
		return fmt.Errorf("%w: decoded length %d", errCorrupt, n)
	}
	raw, err := snappy.Decode(nil, p)
	if err != nil {
		return fmt.Errorf("%w: %w", errCorrupt, err)
	}
	if err := req.Unmarshal(raw); err != nil {
		return fmt.Errorf("%w: %w", errCorrupt, err)
	}
	return nil
}
