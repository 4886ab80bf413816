// Package fleet keeps the hub's record of enrolled clusters and their join
// tokens: who may enrol, which certificate serials are valid for a cluster,
// and when each cluster was last seen.
//
// A cluster's certificates are checked against an allowlist of serials kept
// in its record rather than a revocation list: deleting the record revokes
// every certificate it ever had, and re-enrolling under the same name (with
// a new token) invalidates the old ones. A small tombstone remembers the
// deletion so a refused agent gets a message that says why.
package fleet

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tetherfleet/tether/hub/internal/store"
	"github.com/tetherfleet/tether/protocol/jointoken"
)

// Errors returned by the registry. Callers check them with errors.Is; the
// wrapped message names the cluster or token involved.
var (
	// ErrTokenInvalid: the token is unknown or its secret does not match.
	// The two are not told apart so a caller cannot probe for token IDs.
	ErrTokenInvalid = errors.New("join token is not valid")
	// ErrTokenExpired: the token's TTL has passed.
	ErrTokenExpired = errors.New("join token has expired")
	// ErrTokenUsedUp: the token has no uses left.
	ErrTokenUsedUp = errors.New("join token has no uses left")
	// ErrRevoked: the cluster was deleted or the certificate replaced.
	ErrRevoked = errors.New("certificate revoked")
	// ErrNotFound: no such cluster.
	ErrNotFound = errors.New("cluster not found")
	// ErrInvalidName: a cluster name that is not a DNS-1123 label.
	ErrInvalidName = errors.New("invalid cluster name")
)

// Store kinds owned by this package.
const (
	kindCluster   = "Cluster"
	kindToken     = "JoinToken"
	kindTombstone = "ClusterTombstone"
)

// keepSerials is how many issued certificates stay valid per cluster: the
// current one and the one it replaced, so a rotation that the agent did not
// persist (crash between receive and write) does not lock it out.
const keepSerials = 2

// Cluster is what the hub stores about one member of the fleet.
type Cluster struct {
	Name         string            `json:"name"`
	Labels       map[string]string `json:"labels,omitempty"`
	Created      time.Time         `json:"created"`
	Enrolled     time.Time         `json:"enrolled,omitzero"`
	CertSerials  []string          `json:"certSerials,omitempty"`
	CertNotAfter time.Time         `json:"certNotAfter,omitzero"`
	AgentVersion string            `json:"agentVersion,omitempty"`
	Hostname     string            `json:"hostname,omitempty"`
	Address      string            `json:"address,omitempty"`
	// APIServer is the cluster's kube-apiserver URL as its agent reaches
	// it; values templates see it as .Cluster.spec.controlPlaneEndpoint.
	APIServer string    `json:"apiServer,omitempty"`
	LastSeen  time.Time `json:"lastSeen,omitzero"`
	// ResourceVersion is the store revision of the last write.
	ResourceVersion uint64 `json:"-"`
}

// token is the stored form of a join token: never the secret itself.
type token struct {
	ID         string    `json:"id"`
	Cluster    string    `json:"cluster"`
	SecretHash string    `json:"secretHash"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	UsesLeft   int       `json:"usesLeft"`
	// Redeemed remembers what each use issued, by the CSR's key, so an
	// agent that lost the answer and asks again with the same key gets
	// the same certificate instead of a used-up token.
	Redeemed []redemption `json:"redeemed,omitempty"`
}

// redemption is one use of a token.
type redemption struct {
	KeyID    string    `json:"keyId"`
	Cluster  string    `json:"cluster"`
	CertDER  []byte    `json:"certDER"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"notAfter"`
}

type tombstone struct {
	Name    string    `json:"name"`
	Deleted time.Time `json:"deleted"`
}

// Store is the part of the hub store the registry uses.
type Store interface {
	Get(ctx context.Context, kind, ns, name string) (store.Object, error)
	List(ctx context.Context, kind, ns string) ([]store.Object, error)
	Txn(ctx context.Context, fn func(tx store.Tx) error) error
}

// Config configures a Registry.
type Config struct {
	Store  Store
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the source for token secrets; nil means crypto/rand.
	Rand io.Reader
	// CAFingerprint is embedded in every join token.
	CAFingerprint [32]byte
}

// Registry is the cluster and join-token registry.
type Registry struct {
	cfg Config
}

// New returns a Registry.
func New(cfg Config) (*Registry, error) {
	if cfg.Store == nil {
		return nil, errors.New("fleet: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	return &Registry{cfg: cfg}, nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// ValidateName checks that name can be a cluster name (a DNS-1123 label).
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > 63 || !nameRE.MatchString(name) {
		return fmt.Errorf("%w %q: must be 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit", ErrInvalidName, name)
	}
	return nil
}

// TokenRequest describes a join token to create.
type TokenRequest struct {
	Cluster string
	TTL     time.Duration
	Uses    int
	Labels  map[string]string
}

// TokenInfo is a created token: the secret string is shown once.
type TokenInfo struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Cluster string    `json:"cluster"`
	Expires time.Time `json:"expires"`
	Uses    int       `json:"uses"`
}

// CreateToken makes a join token for a cluster, creating the cluster record
// (not yet enrolled) if it does not exist.
func (r *Registry) CreateToken(ctx context.Context, req TokenRequest) (TokenInfo, error) {
	if err := ValidateName(req.Cluster); err != nil {
		return TokenInfo{}, fmt.Errorf("create token: %w", err)
	}
	if req.TTL <= 0 {
		return TokenInfo{}, fmt.Errorf("create token for cluster %q: ttl %s must be positive", req.Cluster, req.TTL)
	}
	if req.Uses < 1 {
		return TokenInfo{}, fmt.Errorf("create token for cluster %q: uses %d must be at least 1", req.Cluster, req.Uses)
	}
	tok, err := jointoken.New(r.cfg.CAFingerprint, r.cfg.Rand)
	if err != nil {
		return TokenInfo{}, fmt.Errorf("create token for cluster %q: %w", req.Cluster, err)
	}
	now := r.cfg.Now().UTC()
	h := tok.SecretHash()
	rec := token{ID: tok.ID, Cluster: req.Cluster, SecretHash: hex.EncodeToString(h[:]),
		Created: now, Expires: now.Add(req.TTL), UsesLeft: req.Uses}
	err = r.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		if _, err := tx.Get(kindCluster, "", req.Cluster); errors.Is(err, store.ErrNotFound) {
			c := Cluster{Name: req.Cluster, Labels: req.Labels, Created: now}
			if err := createJSON(tx, kindCluster, c.Name, c); err != nil {
				return err
			}
			// A cluster created again after a delete is a new cluster.
			if err := tx.Delete(kindTombstone, "", c.Name, 0); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		} else if err != nil {
			return err
		}
		return createJSON(tx, kindToken, rec.ID, rec)
	})
	if err != nil {
		return TokenInfo{}, fmt.Errorf("create token for cluster %q: %w", req.Cluster, err)
	}
	r.cfg.Logger.Info("join token created", "cluster", req.Cluster, "token_id", tok.ID, "expires", rec.Expires, "uses", req.Uses)
	return TokenInfo{Token: tok.String(), ID: tok.ID, Cluster: req.Cluster, Expires: rec.Expires, Uses: req.Uses}, nil
}

// Issued is a certificate the caller signed for an enrolling or renewing
// agent.
type Issued struct {
	CertDER  []byte
	Serial   string
	NotAfter time.Time
}

// SignFunc signs a certificate for cluster.
type SignFunc func(cluster string) (Issued, error)

// Enroll redeems a join token: it checks the token, spends one use, signs a
// certificate with sign and makes it the cluster's only valid one. Nothing
// is written when any step fails.
func (r *Registry) Enroll(ctx context.Context, tokenString string, info AgentInfo, sign SignFunc) (string, Issued, error) {
	tok, err := jointoken.Parse(tokenString)
	if err != nil {
		return "", Issued{}, fmt.Errorf("enroll: %w: %w", ErrTokenInvalid, err)
	}
	now := r.cfg.Now().UTC()
	// Check the token on a read first: a wrong or spent token, which anyone
	// can send, must not take the store's write lock.
	if obj, err := r.cfg.Store.Get(ctx, kindToken, "", tok.ID); errors.Is(err, store.ErrNotFound) {
		return "", Issued{}, fmt.Errorf("enroll: token %s: %w", tok.ID, ErrTokenInvalid)
	} else if err != nil {
		return "", Issued{}, fmt.Errorf("enroll: %w", err)
	} else {
		var rec token
		if err := json.Unmarshal(obj.Value, &rec); err != nil {
			return "", Issued{}, fmt.Errorf("enroll: decode token %s: %w", tok.ID, err)
		}
		if _, err := checkToken(tok, &rec, now, info.KeyID); err != nil {
			return "", Issued{}, fmt.Errorf("enroll: %w", err)
		}
	}
	var cluster string
	var issued Issued
	var again bool
	err = r.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		var rec token
		obj, err := getJSON(tx, kindToken, tok.ID, &rec)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("token %s: %w", tok.ID, ErrTokenInvalid)
		} else if err != nil {
			return err
		}
		prior, err := checkToken(tok, &rec, now, info.KeyID)
		if err != nil {
			return err
		}
		var c Cluster
		cobj, err := getJSON(tx, kindCluster, rec.Cluster, &c)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("token %s: cluster %q was deleted: %w", tok.ID, rec.Cluster, ErrTokenInvalid)
		} else if err != nil {
			return err
		}
		if prior != nil && slices.Contains(c.CertSerials, prior.Serial) {
			// The same key asks again (its answer was lost): same identity.
			issued, cluster, again = Issued{CertDER: prior.CertDER, Serial: prior.Serial, NotAfter: prior.NotAfter}, rec.Cluster, true
			return nil
		}
		if prior != nil {
			return fmt.Errorf("token %s for cluster %q: the certificate it issued to this key was replaced: %w", tok.ID, rec.Cluster, ErrTokenUsedUp)
		}
		issued, err = sign(rec.Cluster)
		if err != nil {
			return fmt.Errorf("sign certificate for cluster %q: %w", rec.Cluster, err)
		}
		rec.UsesLeft--
		if info.KeyID != "" {
			rec.Redeemed = append(rec.Redeemed, redemption{KeyID: info.KeyID, Cluster: rec.Cluster, CertDER: issued.CertDER, Serial: issued.Serial, NotAfter: issued.NotAfter})
		}
		if err := updateJSON(tx, kindToken, rec.ID, obj.ResourceVersion, rec); err != nil {
			return err
		}
		c.Enrolled = now
		c.CertSerials = []string{issued.Serial}
		c.CertNotAfter = issued.NotAfter
		info.apply(&c)
		cluster = rec.Cluster
		return updateJSON(tx, kindCluster, c.Name, cobj.ResourceVersion, c)
	})
	if err != nil {
		return "", Issued{}, fmt.Errorf("enroll: %w", err)
	}
	if again {
		r.cfg.Logger.Info("enrolment repeated with the same key; same certificate returned", "cluster", cluster, "token_id", tok.ID)
		return cluster, issued, nil
	}
	r.cfg.Logger.Info("cluster enrolled", "cluster", cluster, "token_id", tok.ID, "cert_not_after", issued.NotAfter)
	return cluster, issued, nil
}

// checkToken checks tok against its record at now. It returns the earlier
// redemption by the same key, if any, which a spent token still answers
// within its lifetime.
func checkToken(tok jointoken.Token, rec *token, now time.Time, keyID string) (*redemption, error) {
	h := tok.SecretHash()
	if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(h[:])), []byte(rec.SecretHash)) != 1 {
		return nil, fmt.Errorf("token %s: %w", tok.ID, ErrTokenInvalid)
	}
	if !now.Before(rec.Expires) {
		return nil, fmt.Errorf("token %s for cluster %q expired at %s: %w", tok.ID, rec.Cluster, rec.Expires.Format(time.RFC3339), ErrTokenExpired)
	}
	if keyID != "" {
		for i := range rec.Redeemed {
			if subtle.ConstantTimeCompare([]byte(rec.Redeemed[i].KeyID), []byte(keyID)) == 1 {
				return &rec.Redeemed[i], nil
			}
		}
	}
	if rec.UsesLeft < 1 {
		return nil, fmt.Errorf("token %s for cluster %q: %w", tok.ID, rec.Cluster, ErrTokenUsedUp)
	}
	return nil, nil
}

// Authorize checks that a certificate with serial may act as cluster.
func (r *Registry) Authorize(ctx context.Context, cluster, serial string) (Cluster, error) {
	var c Cluster
	_, err := r.get(ctx, kindCluster, cluster, &c)
	if errors.Is(err, store.ErrNotFound) {
		var ts tombstone
		if _, terr := r.get(ctx, kindTombstone, cluster, &ts); terr == nil {
			return Cluster{}, fmt.Errorf("cluster %q was deleted at %s: %w", cluster, ts.Deleted.Format(time.RFC3339), ErrRevoked)
		}
		return Cluster{}, fmt.Errorf("cluster %q is not enrolled: %w", cluster, ErrRevoked)
	}
	if err != nil {
		return Cluster{}, fmt.Errorf("authorize cluster %q: %w", cluster, err)
	}
	if !slices.Contains(c.CertSerials, serial) {
		return Cluster{}, fmt.Errorf("cluster %q: certificate serial %s was replaced by a newer enrolment: %w", cluster, serial, ErrRevoked)
	}
	return c, nil
}

// Renew replaces the certificate of an authorised cluster, keeping the
// previous one valid until it expires.
func (r *Registry) Renew(ctx context.Context, cluster, serial string, sign SignFunc) (Issued, error) {
	var issued Issued
	err := r.update(ctx, cluster, func(c *Cluster) error {
		if !slices.Contains(c.CertSerials, serial) {
			return fmt.Errorf("certificate serial %s: %w", serial, ErrRevoked)
		}
		var err error
		issued, err = sign(cluster)
		if err != nil {
			return fmt.Errorf("sign certificate: %w", err)
		}
		c.CertSerials = append([]string{issued.Serial}, c.CertSerials...)
		c.CertSerials = c.CertSerials[:min(len(c.CertSerials), keepSerials)]
		c.CertNotAfter = issued.NotAfter
		return nil
	})
	if err != nil {
		return Issued{}, fmt.Errorf("renew certificate of cluster %q: %w", cluster, err)
	}
	r.cfg.Logger.Info("certificate renewed", "cluster", cluster, "not_after", issued.NotAfter)
	return issued, nil
}

// AgentInfo is what an agent tells the hub about itself on connect.
type AgentInfo struct {
	Version  string
	Hostname string
	Address  string
	// APIServer is the agent's kube-apiserver URL (validated by the caller).
	APIServer string
	// KeyID identifies the enrolling key (SHA-256 of the CSR's public key);
	// a retry with the same key gets the same certificate.
	KeyID string
}

func (i AgentInfo) apply(c *Cluster) {
	if i.Version != "" {
		c.AgentVersion = i.Version
	}
	if i.Hostname != "" {
		c.Hostname = i.Hostname
	}
	if i.Address != "" {
		c.Address = i.Address
	}
	if i.APIServer != "" {
		c.APIServer = i.APIServer
	}
}

// Contact is one observed contact with a cluster's agent.
type Contact struct {
	Info AgentInfo
	At   time.Time
}

// SeenMany records contacts with agents in one write; clusters deleted
// meanwhile are skipped. The gateway batches contacts so that thousands of
// agents connecting at once cost a few writes, not one fsync each.
func (r *Registry) SeenMany(ctx context.Context, contacts map[string]Contact) error {
	if len(contacts) == 0 {
		return nil
	}
	err := r.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		for name, ct := range contacts {
			var c Cluster
			obj, err := getJSON(tx, kindCluster, name, &c)
			if errors.Is(err, store.ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			ct.Info.apply(&c)
			if ct.At.After(c.LastSeen) {
				c.LastSeen = ct.At.UTC()
			}
			if err := updateJSON(tx, kindCluster, name, obj.ResourceVersion, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record contact with %d clusters: %w", len(contacts), err)
	}
	return nil
}

// SetLabels merges labels into a cluster's labels; an empty value removes
// the key.
func (r *Registry) SetLabels(ctx context.Context, cluster string, labels map[string]string) (Cluster, error) {
	var out Cluster
	err := r.update(ctx, cluster, func(c *Cluster) error {
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		for k, v := range labels {
			if v == "" {
				delete(c.Labels, k)
			} else {
				c.Labels[k] = v
			}
		}
		out = *c
		return nil
	})
	if err != nil {
		return Cluster{}, fmt.Errorf("label cluster %q: %w", cluster, err)
	}
	return out, nil
}

// Get returns one cluster.
func (r *Registry) Get(ctx context.Context, name string) (Cluster, error) {
	var c Cluster
	obj, err := r.get(ctx, kindCluster, name, &c)
	if errors.Is(err, store.ErrNotFound) {
		return Cluster{}, fmt.Errorf("get cluster %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Cluster{}, fmt.Errorf("get cluster %q: %w", name, err)
	}
	c.ResourceVersion = obj.ResourceVersion
	return c, nil
}

// List returns every cluster, sorted by name.
func (r *Registry) List(ctx context.Context) ([]Cluster, error) {
	objs, err := r.cfg.Store.List(ctx, kindCluster, "")
	if err != nil {
		return nil, fmt.Errorf("list clusters: %w", err)
	}
	out := make([]Cluster, 0, len(objs))
	for _, o := range objs {
		var c Cluster
		if err := json.Unmarshal(o.Value, &c); err != nil {
			return nil, fmt.Errorf("list clusters: decode %q: %w", o.Name, err)
		}
		c.ResourceVersion = o.ResourceVersion
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Cluster) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Delete removes a cluster, revoking its certificates and every join token
// issued for it.
func (r *Registry) Delete(ctx context.Context, name string) error {
	now := r.cfg.Now().UTC()
	err := r.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		if err := tx.Delete(kindCluster, "", name, 0); errors.Is(err, store.ErrNotFound) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		toks, err := tx.List(kindToken, "")
		if err != nil {
			return err
		}
		for _, o := range toks {
			var t token
			if err := json.Unmarshal(o.Value, &t); err == nil && t.Cluster == name {
				if err := tx.Delete(kindToken, "", o.Name, 0); err != nil {
					return err
				}
			}
		}
		ts := tombstone{Name: name, Deleted: now}
		if err := tx.Delete(kindTombstone, "", name, 0); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return createJSON(tx, kindTombstone, name, ts)
	})
	if err != nil {
		return fmt.Errorf("delete cluster %q: %w", name, err)
	}
	r.cfg.Logger.Info("cluster deleted; certificates revoked", "cluster", name)
	return nil
}

func (r *Registry) update(ctx context.Context, name string, fn func(c *Cluster) error) error {
	return r.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		var c Cluster
		obj, err := getJSON(tx, kindCluster, name, &c)
		if errors.Is(err, store.ErrNotFound) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		if err := fn(&c); err != nil {
			return err
		}
		return updateJSON(tx, kindCluster, name, obj.ResourceVersion, c)
	})
}

func (r *Registry) get(ctx context.Context, kind, name string, v any) (store.Object, error) {
	obj, err := r.cfg.Store.Get(ctx, kind, "", name)
	if err != nil {
		return store.Object{}, err
	}
	if err := json.Unmarshal(obj.Value, v); err != nil {
		return store.Object{}, fmt.Errorf("decode %s %q: %w", kind, name, err)
	}
	return obj, nil
}

func getJSON(tx store.Tx, kind, name string, v any) (store.Object, error) {
	obj, err := tx.Get(kind, "", name)
	if err != nil {
		return store.Object{}, err
	}
	if err := json.Unmarshal(obj.Value, v); err != nil {
		return store.Object{}, fmt.Errorf("decode %s %q: %w", kind, name, err)
	}
	return obj, nil
}

func createJSON(tx store.Tx, kind, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = tx.Create(store.Object{Kind: kind, Name: name, Value: b})
	return err
}

func updateJSON(tx store.Tx, kind, name string, rv uint64, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = tx.Update(store.Object{Kind: kind, Name: name, Value: b, ResourceVersion: rv})
	return err
}
