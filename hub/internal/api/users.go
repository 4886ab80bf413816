package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tetherfleet/tether/hub/internal/store"
)

// Role is what a console user may do.
type Role string

// Roles: viewers read; admins also write.
const (
	RoleViewer Role = "viewer"
	RoleAdmin  Role = "admin"
)

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case RoleViewer, RoleAdmin:
		return Role(s), nil
	}
	return "", fmt.Errorf("role %q: want admin or viewer", s)
}

const kindUser = "ConsoleUser"

// user is a console user; the token is stored only as a hash. A token is
// "<name>.<secret>" so the lookup needs no scan and the secret check is
// constant-time.
type user struct {
	Name       string    `json:"name"`
	Role       Role      `json:"role"`
	SecretHash string    `json:"secretHash"`
	Created    time.Time `json:"created"`
}

// UserStore is the part of the hub store the console users live in.
type UserStore interface {
	Get(ctx context.Context, kind, ns, name string) (store.Object, error)
	Create(ctx context.Context, obj store.Object) (store.Object, error)
}

// Users manages console users and checks their tokens.
type Users struct {
	Store UserStore
	Now   func() time.Time
}

// Create adds a user and returns its token, shown once.
func (u *Users) Create(ctx context.Context, name string, role Role) (string, error) {
	if name == "" || strings.ContainsAny(name, ". /") {
		return "", fmt.Errorf("create user %q: name must be non-empty without '.', '/' or spaces", name)
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	secret := hex.EncodeToString(b[:])
	h := sha256.Sum256([]byte(secret))
	rec := user{Name: name, Role: role, SecretHash: hex.EncodeToString(h[:]), Created: u.Now().UTC()}
	v, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	if _, err := u.Store.Create(ctx, store.Object{Kind: kindUser, Name: name, Value: v}); err != nil {
		return "", fmt.Errorf("create user %q: %w", name, err)
	}
	return name + "." + secret, nil
}

// EnsureAdmin creates the user "admin" on first start. created is false when
// it already exists, and then no token is returned: it was shown once.
func (u *Users) EnsureAdmin(ctx context.Context) (token string, created bool, err error) {
	if _, err := u.Store.Get(ctx, kindUser, "", "admin"); err == nil {
		return "", false, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", false, err
	}
	tok, err := u.Create(ctx, "admin", RoleAdmin)
	if err != nil {
		return "", false, err
	}
	return tok, true, nil
}

// errUnauthenticated is returned for any token that does not check out.
var errUnauthenticated = errors.New("unauthenticated: token not valid")

// Authenticate returns the user name and role of a bearer token.
func (u *Users) Authenticate(ctx context.Context, token string) (string, Role, error) {
	name, secret, ok := strings.Cut(token, ".")
	if !ok || name == "" || secret == "" {
		return "", "", errUnauthenticated
	}
	obj, err := u.Store.Get(ctx, kindUser, "", name)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		return "", "", errUnauthenticated
	} else if err != nil {
		return "", "", err
	}
	var rec user
	if err := json.Unmarshal(obj.Value, &rec); err != nil {
		return "", "", fmt.Errorf("decode user %q: %w", name, err)
	}
	h := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(h[:])), []byte(rec.SecretHash)) != 1 {
		return "", "", errUnauthenticated
	}
	return rec.Name, rec.Role, nil
}
