package fleet_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
)

func newRegistry(t *testing.T) *fleet.Registry {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "hub.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r, err := fleet.New(fleet.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCreateTokenValidation(t *testing.T) {
	r := newRegistry(t)
	ctx := context.Background()
	tests := []struct {
		name string
		req  fleet.TokenRequest
		want string
	}{
		{"upper-case name", fleet.TokenRequest{Cluster: "Edge", TTL: time.Hour, Uses: 1}, `invalid cluster name "Edge"`},
		{"empty name", fleet.TokenRequest{Cluster: "", TTL: time.Hour, Uses: 1}, "invalid cluster name"},
		{"long name", fleet.TokenRequest{Cluster: strings.Repeat("a", 64), TTL: time.Hour, Uses: 1}, "invalid cluster name"},
		{"zero ttl", fleet.TokenRequest{Cluster: "edge", Uses: 1}, "ttl 0s must be positive"},
		{"zero uses", fleet.TokenRequest{Cluster: "edge", TTL: time.Hour}, "uses 0 must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.CreateToken(ctx, tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v; want it to contain %q", err, tt.want)
			}
		})
	}
	if cs, err := r.List(ctx); err != nil || len(cs) != 0 {
		t.Fatalf("refused requests stored clusters: %v, %v", cs, err)
	}
}

func TestTokenCreatesPendingClusterWithLabels(t *testing.T) {
	r := newRegistry(t)
	ctx := context.Background()
	info, err := r.CreateToken(ctx, fleet.TokenRequest{Cluster: "edge-1", TTL: time.Hour, Uses: 2, Labels: map[string]string{"region": "eu"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.Token, "tether1.") || info.Uses != 2 {
		t.Fatalf("token info = %+v", info)
	}
	c, err := r.Get(ctx, "edge-1")
	if err != nil || c.Labels["region"] != "eu" || !c.Enrolled.IsZero() {
		t.Fatalf("cluster = %+v, %v", c, err)
	}
	c, err = r.SetLabels(ctx, "edge-1", map[string]string{"region": "", "tier": "edge"})
	if err != nil || c.Labels["tier"] != "edge" || c.Labels["region"] != "" || len(c.Labels) != 1 {
		t.Fatalf("after SetLabels: %+v, %v", c, err)
	}
}

func TestDeleteUnknownCluster(t *testing.T) {
	r := newRegistry(t)
	if err := r.Delete(context.Background(), "nope"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("Delete(nope) = %v; want ErrNotFound", err)
	}
	if _, err := r.Get(context.Background(), "nope"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("Get(nope) = %v; want ErrNotFound", err)
	}
}

func TestEnrollSignFailureChangesNothing(t *testing.T) {
	r := newRegistry(t)
	ctx := context.Background()
	info, err := r.CreateToken(ctx, fleet.TokenRequest{Cluster: "edge-1", TTL: time.Hour, Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	_, _, err = r.Enroll(ctx, info.Token, fleet.AgentInfo{}, func(string) (fleet.Issued, error) { return fleet.Issued{}, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("Enroll = %v; want the sign error", err)
	}
	// The use was not spent: the token still enrols.
	cluster, _, err := r.Enroll(ctx, info.Token, fleet.AgentInfo{Version: "v1"}, func(string) (fleet.Issued, error) {
		return fleet.Issued{Serial: "abc", NotAfter: time.Now().Add(time.Hour)}, nil
	})
	if err != nil || cluster != "edge-1" {
		t.Fatalf("Enroll after failed sign = %q, %v", cluster, err)
	}
	if _, err := r.Authorize(ctx, "edge-1", "abc"); err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	if _, err := r.Authorize(ctx, "edge-1", "other"); !errors.Is(err, fleet.ErrRevoked) {
		t.Fatalf("Authorize(other serial) = %v; want ErrRevoked", err)
	}
}
