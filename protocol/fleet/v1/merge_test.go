package fleetv1

import (
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

func svc(ns, name string) *Service { return &Service{Namespace: ns, Name: name} }

func names(ds *DesiredState) []string {
	var out []string
	for _, s := range ds.GetServices() {
		out = append(out, s.GetNamespace()+"/"+s.GetName())
	}
	return out
}

func TestMerge(t *testing.T) {
	cur := &DesiredState{Revision: 5, Epoch: "e1", Full: true, Services: []*Service{svc("a", "x"), svc("b", "y")}}

	next, replace, err := Merge(cur, &DesiredState{Revision: 6, Services: []*Service{svc("a", "z")}, Tombstones: []*Tombstone{{Namespace: "b", Name: "y"}}})
	if err != nil || replace || next == nil {
		t.Fatalf("delta: %v %v %v", next, replace, err)
	}
	if got := names(next); len(got) != 2 || got[0] != "a/x" || got[1] != "a/z" || next.GetEpoch() != "e1" || !next.GetFull() {
		t.Fatalf("delta merged into %v (epoch %q)", got, next.GetEpoch())
	}
	if next, _, err := Merge(cur, &DesiredState{Revision: 5, Epoch: "e1"}); err != nil || next != nil {
		t.Fatalf("an equal revision was not ignored: %v %v", next, err)
	}
	if _, _, err := Merge(cur, &DesiredState{Revision: 9, Epoch: "e2"}); !errors.Is(err, ErrOtherEpochDelta) {
		t.Fatalf("a delta of another epoch: %v, want ErrOtherEpochDelta", err)
	}
	next, replace, err = Merge(cur, &DesiredState{Revision: 2, Epoch: "e2", Full: true, Services: []*Service{svc("c", "w")}})
	if err != nil || !replace || len(next.GetServices()) != 1 {
		t.Fatalf("a full state of another history must replace: %v %v %v", next, replace, err)
	}
	if _, _, err := Merge(cur, &DesiredState{Revision: 7, Services: []*Service{svc("", "nameless")}}); err == nil {
		t.Fatal("a service without a namespace was merged")
	}
	if len(cur.GetServices()) != 2 {
		t.Fatal("Merge modified the held state")
	}
}

func TestWindowOpen(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 2, 0, 0, 0, time.UTC)
	w := func(from, to time.Duration) *Window {
		return &Window{Start: timestamppb.New(t0.Add(from)), End: timestamppb.New(t0.Add(to))}
	}
	ws := []*Window{w(2*time.Hour, 3*time.Hour), w(time.Hour, 90*time.Minute)}
	if open, next := WindowOpen(ws, t0); open || !next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("before both: open %v next %v, want closed, next at +1h", open, next)
	}
	if open, _ := WindowOpen(ws, t0.Add(time.Hour)); !open {
		t.Fatal("at a window's start it is not open")
	}
	if open, next := WindowOpen(ws, t0.Add(90*time.Minute)); open || !next.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("at a window's end: open %v next %v", open, next)
	}
	if open, next := WindowOpen(ws, t0.Add(4*time.Hour)); open || !next.IsZero() {
		t.Fatalf("after all: open %v next %v", open, next)
	}
}

// TestMergeTelemetry: a delta without telemetry keeps the held set, one
// with telemetry (even empty) replaces it, and a full state without it
// means none.
func TestMergeTelemetry(t *testing.T) {
	set := func(names ...string) *Telemetry {
		tel := &Telemetry{}
		for _, n := range names {
			tel.ScrapeConfigs = append(tel.ScrapeConfigs, &ScrapeConfig{Namespace: "ns", Name: n})
		}
		return tel
	}
	got := func(ds *DesiredState) []string {
		var out []string
		for _, c := range ds.GetTelemetry().GetScrapeConfigs() {
			out = append(out, c.GetName())
		}
		return out
	}
	cur := &DesiredState{Revision: 5, Epoch: "e1", Full: true, Telemetry: set("a", "b")}
	for _, tc := range []struct {
		name string
		ds   *DesiredState
		want []string
	}{
		{"delta without telemetry keeps it", &DesiredState{Revision: 6}, []string{"a", "b"}},
		{"delta with telemetry replaces it", &DesiredState{Revision: 6, Telemetry: set("c")}, []string{"c"}},
		{"delta with empty telemetry removes all", &DesiredState{Revision: 6, Telemetry: set()}, nil},
		{"full state without telemetry means none", &DesiredState{Revision: 6, Full: true}, nil},
		{"full state with telemetry", &DesiredState{Revision: 6, Full: true, Telemetry: set("d")}, []string{"d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, _, err := Merge(cur, tc.ds)
			if err != nil || next == nil {
				t.Fatalf("Merge: %v %v", next, err)
			}
			if g := got(next); !slices.Equal(g, tc.want) {
				t.Fatalf("scrape configs %v, want %v", g, tc.want)
			}
		})
	}
	if g := got(cur); !slices.Equal(g, []string{"a", "b"}) {
		t.Fatalf("Merge modified the held state: %v", g)
	}
}
