package alerting

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/store"
)

// SilenceKind is the store kind of silences: one record per silence,
// cluster-scoped, named by its ID, the JSON of a Silence.
const SilenceKind = "AlertSilence"

// Silence limits.
const (
	maxSilences        = 1000
	maxSilenceMatchers = 32
	maxSilenceDuration = 365 * 24 * time.Hour
	maxCommentBytes    = 1024
	// keepExpired is how long an expired silence is still listed.
	keepExpired = 24 * time.Hour
)

// Errors of silences.
var (
	// ErrInvalidSilence: a silence request that cannot be stored.
	ErrInvalidSilence = errors.New("invalid silence")
	// ErrSilenceNotFound: no silence has that ID.
	ErrSilenceNotFound = errors.New("silence not found")
)

// Silence mutes the alerts whose labels match all its matchers between
// StartsAt and EndsAt.
type Silence struct {
	ID        string    `json:"id"`
	Matchers  []string  `json:"matchers"`
	StartsAt  time.Time `json:"startsAt"`
	EndsAt    time.Time `json:"endsAt"`
	CreatedBy string    `json:"createdBy,omitempty"`
	Comment   string    `json:"comment,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// State is active, pending or expired at now.
func (s *Silence) State(now time.Time) string {
	switch {
	case !now.Before(s.EndsAt):
		return "expired"
	case now.Before(s.StartsAt):
		return "pending"
	}
	return "active"
}

// SilenceRequest is the body of POST /v1/silences.
type SilenceRequest struct {
	Matchers []string `json:"matchers"`
	// StartsAt defaults to now; EndsAt to StartsAt plus Duration.
	StartsAt *time.Time `json:"startsAt,omitempty"`
	EndsAt   *time.Time `json:"endsAt,omitempty"`
	// Duration is a Go duration ("2h").
	Duration  string `json:"duration,omitempty"`
	CreatedBy string `json:"createdBy,omitempty"`
	Comment   string `json:"comment,omitempty"`
}

// DecodeSilenceRequest decodes and checks a silence request (untrusted
// input) against now.
func DecodeSilenceRequest(b []byte, now time.Time) (*Silence, error) {
	var req SilenceRequest
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSilence, err)
	}
	s := &Silence{Matchers: req.Matchers, CreatedBy: req.CreatedBy, Comment: req.Comment, StartsAt: now, UpdatedAt: now}
	if req.StartsAt != nil {
		s.StartsAt = *req.StartsAt
	}
	switch {
	case req.EndsAt != nil && req.Duration != "":
		return nil, fmt.Errorf("%w: set endsAt or duration, not both", ErrInvalidSilence)
	case req.EndsAt != nil:
		s.EndsAt = *req.EndsAt
	case req.Duration != "":
		d, err := time.ParseDuration(req.Duration)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%w: duration %q: want a positive duration such as 2h", ErrInvalidSilence, req.Duration)
		}
		s.EndsAt = s.StartsAt.Add(d)
	default:
		return nil, fmt.Errorf("%w: endsAt or duration is required", ErrInvalidSilence)
	}
	if err := s.validate(now); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Silence) validate(now time.Time) error {
	if len(s.Matchers) == 0 {
		return fmt.Errorf("%w: at least one matcher is required", ErrInvalidSilence)
	}
	if len(s.Matchers) > maxSilenceMatchers {
		return fmt.Errorf("%w: %d matchers, more than the limit of %d", ErrInvalidSilence, len(s.Matchers), maxSilenceMatchers)
	}
	matchesEmpty := true
	for i, m := range s.Matchers {
		lm, err := objects.ParseMatcher(m)
		if err != nil {
			return fmt.Errorf("%w: matchers[%d]: %v", ErrInvalidSilence, i, err)
		}
		if !lm.Matches("") {
			matchesEmpty = false
		}
	}
	if matchesEmpty {
		return fmt.Errorf("%w: the matchers match every alert (each matches an empty label); name at least one label value", ErrInvalidSilence)
	}
	if !s.EndsAt.After(s.StartsAt) {
		return fmt.Errorf("%w: endsAt %s is not after startsAt %s", ErrInvalidSilence, s.EndsAt.Format(time.RFC3339), s.StartsAt.Format(time.RFC3339))
	}
	if !s.EndsAt.After(now) {
		return fmt.Errorf("%w: endsAt %s has passed", ErrInvalidSilence, s.EndsAt.Format(time.RFC3339))
	}
	if s.EndsAt.Sub(now) > maxSilenceDuration {
		return fmt.Errorf("%w: ends more than %s from now", ErrInvalidSilence, maxSilenceDuration)
	}
	if len(s.Comment) > maxCommentBytes || len(s.CreatedBy) > 256 {
		return fmt.Errorf("%w: comment over %d bytes or createdBy over 256", ErrInvalidSilence, maxCommentBytes)
	}
	return nil
}

// compiledSilence is a Silence with parsed matchers.
type compiledSilence struct {
	s        Silence
	matchers []*labels.Matcher
}

func compileSilences(ss []Silence) []compiledSilence {
	out := make([]compiledSilence, 0, len(ss))
	for _, s := range ss {
		c := compiledSilence{s: s}
		ok := true
		for _, m := range s.Matchers {
			lm, err := objects.ParseMatcher(m)
			if err != nil {
				ok = false
				break
			}
			c.matchers = append(c.matchers, lm)
		}
		if ok {
			out = append(out, c)
		}
	}
	return out
}

// SetSilences replaces the silences the dispatcher mutes alerts with.
func (d *Dispatcher) SetSilences(ss []Silence) {
	c := compileSilences(ss)
	d.mu.Lock()
	d.silences = c
	d.mu.Unlock()
}

// silencedLocked returns the ID of an active silence matching ls, or "".
func (d *Dispatcher) silencedLocked(ls labels.Labels, now time.Time) string {
	for _, c := range d.silences {
		if c.s.State(now) != "active" {
			continue
		}
		all := true
		for _, m := range c.matchers {
			if !m.Matches(ls.Get(m.Name)) {
				all = false
				break
			}
		}
		if all {
			return c.s.ID
		}
	}
	return ""
}

// SilenceStore is the part of the hub store silences use.
type SilenceStore interface {
	List(ctx context.Context, kind, namespace string) ([]store.Object, error)
	Txn(ctx context.Context, fn func(tx store.Tx) error) error
}

// Silences reads and writes silences in the hub store.
type Silences struct {
	Store SilenceStore
	Now   func() time.Time
}

// List returns the silences, newest first; those expired for over a day
// are left out.
func (s *Silences) List(ctx context.Context) ([]Silence, error) {
	objs, err := s.Store.List(ctx, SilenceKind, "")
	if err != nil {
		return nil, fmt.Errorf("list silences: %w", err)
	}
	now := s.Now()
	out := make([]Silence, 0, len(objs))
	for _, o := range objs {
		var sl Silence
		if err := json.Unmarshal(o.Value, &sl); err != nil {
			return nil, fmt.Errorf("list silences: %s: %w", o.Name, err)
		}
		if now.Sub(sl.EndsAt) > keepExpired {
			continue
		}
		out = append(out, sl)
	}
	slices.SortFunc(out, func(a, b Silence) int { return b.StartsAt.Compare(a.StartsAt) })
	return out, nil
}

// Create stores a new silence (already checked) with a fresh ID.
func (s *Silences) Create(ctx context.Context, sl *Silence) (*Silence, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	sl.ID = hex.EncodeToString(b[:])
	v, err := json.Marshal(sl)
	if err != nil {
		return nil, err
	}
	now := s.Now()
	err = s.Store.Txn(ctx, func(tx store.Tx) error {
		objs, err := tx.List(SilenceKind, "")
		if err != nil {
			return err
		}
		live := 0
		for _, o := range objs {
			var old Silence
			if json.Unmarshal(o.Value, &old) == nil && now.Sub(old.EndsAt) > keepExpired {
				if err := tx.Delete(SilenceKind, "", o.Name, 0); err != nil {
					return err
				}
				continue
			}
			live++
		}
		if live >= maxSilences {
			return fmt.Errorf("%w: %d silences are stored, the limit; expire some first", ErrInvalidSilence, live)
		}
		_, err = tx.Create(store.Object{Kind: SilenceKind, Name: sl.ID, Value: v})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create silence: %w", err)
	}
	return sl, nil
}

// Expire ends a silence now.
func (s *Silences) Expire(ctx context.Context, id string) (*Silence, error) {
	var out Silence
	err := s.Store.Txn(ctx, func(tx store.Tx) error {
		o, err := tx.Get(SilenceKind, "", id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: %q", ErrSilenceNotFound, id)
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(o.Value, &out); err != nil {
			return err
		}
		now := s.Now()
		if out.State(now) == "expired" {
			return nil
		}
		out.EndsAt, out.UpdatedAt = now, now
		if out.StartsAt.After(now) {
			out.StartsAt = now
		}
		v, err := json.Marshal(out)
		if err != nil {
			return err
		}
		o.Value = v
		_, err = tx.Update(o)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("expire silence %s: %w", id, err)
	}
	return &out, nil
}
