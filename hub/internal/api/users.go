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

// Store kinds of this file. kindUsersInit holds one object, "admin",
// written with the first admin: its presence means the first start is done.
const (
	kindUser      = "ConsoleUser"
	kindUsersInit = "ConsoleUsersInit"
)

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
	Txn(ctx context.Context, fn func(tx store.Tx) error) error
}

// Users manages console users and checks their tokens.
type Users struct {
	Store UserStore
	Now   func() time.Time
}

// AdminUser is the user a hub creates on first start and --reset-admin
// gives a new token.
const AdminUser = "admin"

// ErrLastAdmin: revoking the user would leave no admin.
var ErrLastAdmin = errors.New("last admin")

func checkUserName(name string) error {
	if name == "" || strings.ContainsAny(name, ". /") {
		return fmt.Errorf("user %q: name must be non-empty without '.', '/' or spaces: %w", name, store.ErrInvalid)
	}
	return store.ValidateKey(kindUser, "", name)
}

// newToken returns a fresh token for name and the stored record of it.
func (u *Users) newToken(name string, role Role) (string, []byte, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	secret := hex.EncodeToString(b[:])
	h := sha256.Sum256([]byte(secret))
	v, err := json.Marshal(user{Name: name, Role: role, SecretHash: hex.EncodeToString(h[:]), Created: u.Now().UTC()})
	if err != nil {
		return "", nil, err
	}
	return name + "." + secret, v, nil
}

// Create adds a user and returns its token, shown once.
func (u *Users) Create(ctx context.Context, name string, role Role) (string, error) {
	if err := checkUserName(name); err != nil {
		return "", fmt.Errorf("create %w", err)
	}
	tok, v, err := u.newToken(name, role)
	if err != nil {
		return "", err
	}
	if _, err := u.Store.Create(ctx, store.Object{Kind: kindUser, Name: name, Value: v}); err != nil {
		return "", fmt.Errorf("create user %q: %w", name, err)
	}
	return tok, nil
}

// EnsureAdmin creates the user "admin" on first start. The new token is
// handed to persist (which writes the admin console config durably) before
// the user is committed: if persist fails nothing is stored, and the next
// start tries again, so a failed write cannot leave an admin whose token
// nobody has. created is false, and persist is not called, when this is
// not the first start: the admin exists, or was created once and revoked
// since (a revoked admin is not brought back by a restart; see
// ResetAdmin).
func (u *Users) EnsureAdmin(ctx context.Context, persist func(token string) error) (created bool, err error) {
	first := false
	err = u.Store.Txn(ctx, func(tx store.Tx) error {
		_, uerr := tx.Get(kindUser, "", AdminUser)
		if uerr != nil && !errors.Is(uerr, store.ErrNotFound) {
			return uerr
		}
		_, err := tx.Get(kindUsersInit, "", AdminUser)
		switch {
		case errors.Is(err, store.ErrNotFound) && uerr == nil:
			// A store from before the marker: record it now.
			_, err = tx.Create(store.Object{Kind: kindUsersInit, Name: AdminUser, Value: []byte(`{}`)})
			return err
		case errors.Is(err, store.ErrNotFound):
			first = true
			return nil
		}
		return err
	})
	if err != nil || !first {
		return false, err
	}
	tok, v, err := u.newToken(AdminUser, RoleAdmin)
	if err != nil {
		return false, err
	}
	if err := persist(tok); err != nil {
		return false, err
	}
	err = u.Store.Txn(ctx, func(tx store.Tx) error {
		if _, err := tx.Create(store.Object{Kind: kindUser, Name: AdminUser, Value: v}); err != nil {
			return err
		}
		_, err := tx.Create(store.Object{Kind: kindUsersInit, Name: AdminUser, Value: []byte(`{}`)})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("create user %q: %w", AdminUser, err)
	}
	return true, nil
}

// ResetAdmin gives the user "admin" a new token (creating it, with role
// admin, if it was revoked): persist gets the token first, then the user
// is committed and the old token stops working. If the commit fails after
// persist, the written token is not valid yet; run it again.
func (u *Users) ResetAdmin(ctx context.Context, persist func(token string) error) error {
	tok, v, err := u.newToken(AdminUser, RoleAdmin)
	if err != nil {
		return err
	}
	if err := persist(tok); err != nil {
		return err
	}
	err = u.Store.Txn(ctx, func(tx store.Tx) error {
		_, err := tx.Get(kindUser, "", AdminUser)
		switch {
		case errors.Is(err, store.ErrNotFound):
			_, err = tx.Create(store.Object{Kind: kindUser, Name: AdminUser, Value: v})
		case err == nil:
			_, err = tx.Update(store.Object{Kind: kindUser, Name: AdminUser, Value: v})
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("reset user %q: %w", AdminUser, err)
	}
	return nil
}

// Revoke deletes a user; its token is refused from the next request on
// (every request reads the user). Revoking the last admin fails with
// ErrLastAdmin unless force is set: nobody could then write until
// `tether serve --reset-admin` is run on the stopped hub.
func (u *Users) Revoke(ctx context.Context, name string, force bool) (Role, error) {
	if err := checkUserName(name); err != nil {
		return "", fmt.Errorf("revoke %w", err)
	}
	var role Role
	err := u.Store.Txn(ctx, func(tx store.Tx) error {
		obj, err := tx.Get(kindUser, "", name)
		if err != nil {
			return err
		}
		var rec user
		if err := json.Unmarshal(obj.Value, &rec); err != nil {
			return fmt.Errorf("decode user %q: %w", name, err)
		}
		role = rec.Role
		if rec.Role == RoleAdmin && !force {
			all, err := tx.List(kindUser, "")
			if err != nil {
				return err
			}
			admins := 0
			for _, o := range all {
				var r user
				if json.Unmarshal(o.Value, &r) == nil && r.Role == RoleAdmin {
					admins++
				}
			}
			if admins <= 1 {
				return fmt.Errorf("%w: %q is the only admin; revoking it leaves nobody able to change the hub (pass --force to do it anyway; recover with `tether serve --reset-admin` on the stopped hub)", ErrLastAdmin, name)
			}
		}
		return tx.Delete(kindUser, "", name, obj.ResourceVersion)
	})
	if err != nil {
		return "", fmt.Errorf("revoke user %q: %w", name, err)
	}
	return role, nil
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
