package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/store"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
	"github.com/tetherfleet/tether/protocol/jointoken"
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

// txnCounter counts write transactions on a real store.
type txnCounter struct {
	*boltstore.Store
	mu   sync.Mutex
	txns int
}

func (c *txnCounter) Txn(ctx context.Context, fn func(store.Tx) error) error {
	c.mu.Lock()
	c.txns++
	c.mu.Unlock()
	return c.Store.Txn(ctx, fn)
}

func (c *txnCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.txns
}

func newCountingRegistry(t *testing.T) (*fleet.Registry, *txnCounter) {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "hub.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := &txnCounter{Store: st}
	r, err := fleet.New(fleet.Config{Store: c})
	if err != nil {
		t.Fatal(err)
	}
	return r, c
}

func signer(calls *int) fleet.SignFunc {
	return func(cluster string) (fleet.Issued, error) {
		*calls++
		return fleet.Issued{CertDER: []byte(fmt.Sprintf("cert-%d", *calls)), Serial: fmt.Sprintf("s%d", *calls), NotAfter: time.Now().Add(time.Hour)}, nil
	}
}

// TestBadTokenEnrolmentTakesNoWriteLock: an unauthenticated peer sending
// a wrong, unknown or spent token must be refused on a read, without the
// store's write transaction that every other writer waits for.
func TestBadTokenEnrolmentTakesNoWriteLock(t *testing.T) {
	r, c := newCountingRegistry(t)
	ctx := context.Background()
	info, err := r.CreateToken(ctx, fleet.TokenRequest{Cluster: "edge-1", TTL: time.Hour, Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	var calls int
	if _, _, err := r.Enroll(ctx, info.Token, fleet.AgentInfo{KeyID: "k1"}, signer(&calls)); err != nil {
		t.Fatal(err)
	}
	tok, err := jointoken.Parse(info.Token)
	if err != nil {
		t.Fatal(err)
	}
	wrong := tok
	wrong.Secret = strings.Repeat("x", len(tok.Secret))
	unknown := tok
	unknown.ID = "nosuchtoken"
	before := c.count()
	for name, s := range map[string]string{"wrong secret": wrong.String(), "unknown id": unknown.String(), "spent, other key": info.Token} {
		if _, _, err := r.Enroll(ctx, s, fleet.AgentInfo{KeyID: "k2"}, signer(&calls)); err == nil {
			t.Fatalf("%s: enrolled", name)
		}
	}
	if n := c.count() - before; n != 0 {
		t.Fatalf("refused enrolments ran %d write transactions", n)
	}
}

// TestLostEnrollAnswerRetryWithSameKeyGetsSameIdentity: an agent whose
// Enroll answer was lost asks again with the same key and a one-use
// token; it gets the same certificate, and the token is not spent twice.
func TestLostEnrollAnswerRetryWithSameKeyGetsSameIdentity(t *testing.T) {
	r, _ := newCountingRegistry(t)
	ctx := context.Background()
	info, err := r.CreateToken(ctx, fleet.TokenRequest{Cluster: "edge-1", TTL: time.Hour, Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	var calls int
	cl1, is1, err := r.Enroll(ctx, info.Token, fleet.AgentInfo{KeyID: "k1"}, signer(&calls))
	if err != nil {
		t.Fatal(err)
	}
	cl2, is2, err := r.Enroll(ctx, info.Token, fleet.AgentInfo{KeyID: "k1"}, signer(&calls))
	if err != nil {
		t.Fatalf("retry with the same key: %v", err)
	}
	if cl1 != cl2 || string(is1.CertDER) != string(is2.CertDER) || is1.Serial != is2.Serial || calls != 1 {
		t.Fatalf("retry got %s/%s (signed %d times); want %s/%s once", cl2, is2.Serial, calls, cl1, is1.Serial)
	}
	if _, _, err := r.Enroll(ctx, info.Token, fleet.AgentInfo{KeyID: "k2"}, signer(&calls)); !errors.Is(err, fleet.ErrTokenUsedUp) {
		t.Fatalf("another key with the spent token: %v; want ErrTokenUsedUp", err)
	}
	c, err := r.Get(ctx, "edge-1")
	if err != nil || len(c.CertSerials) != 1 || c.CertSerials[0] != is1.Serial {
		t.Fatalf("cluster = %+v, %v", c, err)
	}
}
