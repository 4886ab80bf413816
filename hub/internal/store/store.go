// Package store declares the hub's storage contract: versioned objects keyed
// by (kind, namespace, name), atomic multi-key transactions, and watches.
// Backends (boltstore; etcd later) implement Store and must pass the
// contract suite in storetest.
//
// # Revisions
//
// The store has one revision counter. Every committed write transaction
// (a single Create/Update/Delete, or a Txn that wrote anything) advances it
// by exactly one, and every object written in that transaction records it
// as its ResourceVersion; CreateRevision is the revision of its Create.
// Values are opaque bytes (callers store JSON).
//
// # List then watch
//
// To follow a kind without missing changes, read the objects and the
// revision they reflect in one Txn (tx.List, tx.Revision), then Watch from
// that revision. A watch delivers every event with Revision > fromRevision
// in revision order; several events share a revision when one Txn wrote
// several objects. A watch that cannot keep up, or whose fromRevision is
// older than the backend's history, ends with ErrWatchExpired or returns
// ErrCompacted: the consumer lists again.
package store

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Errors returned by every Store backend; match them with errors.Is. The
// wrapping error says which operation and key failed, e.g.
// "store: update Cluster acme/edge-1: resourceVersion 4 != 7: conflict".
var (
	// ErrNotFound: no object has the key.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: Create found an object with the key.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the expected ResourceVersion is not the current one.
	ErrConflict = errors.New("conflict")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store closed")
	// ErrInvalid: the key or object is malformed; nothing was changed.
	ErrInvalid = errors.New("invalid")
	// ErrCompacted: Watch was asked for changes older than the history the
	// backend keeps; list again and watch from the new revision.
	ErrCompacted = errors.New("revision compacted")
	// ErrWatchExpired: delivered in the final event of a watch that fell
	// too far behind; list again and watch from the new revision.
	ErrWatchExpired = errors.New("watch expired")
)

// Object is one stored value and its versions.
type Object struct {
	Kind      string
	Namespace string // "" for cluster-scoped objects
	Name      string
	Value     []byte

	// ResourceVersion is the revision of the object's last write. On Update
	// and Delete a non-zero value is the expected current version.
	ResourceVersion uint64
	// CreateRevision is the revision of the object's Create.
	CreateRevision uint64
}

// Store is the hub's storage. Implementations are safe for concurrent use.
type Store interface {
	// Get returns one object or ErrNotFound.
	Get(ctx context.Context, kind, namespace, name string) (Object, error)
	// List returns a kind's objects in namespace ("" = all namespaces),
	// sorted by namespace then name.
	List(ctx context.Context, kind, namespace string) ([]Object, error)
	// Create stores a new object; obj.ResourceVersion must be 0. It returns
	// the stored object with its revisions, or ErrAlreadyExists.
	Create(ctx context.Context, obj Object) (Object, error)
	// Update replaces an object's value. If obj.ResourceVersion is non-zero
	// it must equal the current one (else ErrConflict); 0 is unconditional.
	Update(ctx context.Context, obj Object) (Object, error)
	// Delete removes an object; a non-zero expectRV must match (ErrConflict).
	Delete(ctx context.Context, kind, namespace, name string, expectRV uint64) error
	// Txn runs fn in one atomic transaction. If fn returns an error, or ctx
	// is done when fn returns, nothing fn wrote is kept, and Txn returns
	// fn's error unchanged. Other writers wait while fn runs, so keep it
	// short, and never call the Store from inside fn (it would deadlock).
	Txn(ctx context.Context, fn func(tx Tx) error) error
	// Watch streams events of kind ("" = all kinds) with Revision >
	// fromRevision; fromRevision 0 means "from now". The channel is closed
	// when ctx is done or the store is closed; an Error event, if any, is
	// the last one.
	Watch(ctx context.Context, kind string, fromRevision uint64) (<-chan Event, error)
	// Revision returns the store's current revision.
	Revision(ctx context.Context) (uint64, error)
	// Close releases the store and ends all watches. It is idempotent.
	Close() error
}

// Tx is the view of a store inside Txn. Its methods behave like Store's and
// see the transaction's own writes.
type Tx interface {
	Get(kind, namespace, name string) (Object, error)
	List(kind, namespace string) ([]Object, error)
	Create(obj Object) (Object, error)
	Update(obj Object) (Object, error)
	Delete(kind, namespace, name string, expectRV uint64) error
	// Revision is the revision the state seen by the transaction has (or
	// will have on commit, once the transaction has written).
	Revision() uint64
}

// EventType says what happened.
type EventType int

// Event types.
const (
	// EventPut: an object was created or updated (Object.CreateRevision ==
	// Revision for a create).
	EventPut EventType = iota + 1
	// EventDelete: an object was deleted; Object holds its last value and
	// ResourceVersion is the deletion's revision.
	EventDelete
	// EventError: the watch ended; Err says why. Always the last event.
	EventError
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "Put"
	case EventDelete:
		return "Delete"
	case EventError:
		return "Error"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change delivered by Watch. Object.Value may be shared with
// other watchers: treat it as read-only.
type Event struct {
	Type     EventType
	Object   Object
	Revision uint64
	Err      error // EventError only
}

// Key limits.
const (
	MaxKindLen = 63
	MaxNameLen = 253
)

// ValidateKey checks a key the same way in every backend. kind is
// [A-Za-z][A-Za-z0-9]*; name (and namespace, which may be empty) are valid
// UTF-8 without '/', control characters or NUL, and are not "." or "..",
// so they can be joined into bbolt and etcd keys unambiguously. The error
// wraps ErrInvalid.
func ValidateKey(kind, namespace, name string) error {
	if err := ValidateKind(kind); err != nil {
		return err
	}
	if namespace != "" {
		if err := validateSegment("namespace", namespace); err != nil {
			return err
		}
	}
	return validateSegment("name", name)
}

// ValidateKind checks a kind; see ValidateKey.
func ValidateKind(kind string) error {
	if kind == "" {
		return fmt.Errorf("%w: kind is empty", ErrInvalid)
	}
	if len(kind) > MaxKindLen {
		return fmt.Errorf("%w: kind %.20q... is longer than %d", ErrInvalid, kind, MaxKindLen)
	}
	for i := 0; i < len(kind); i++ {
		c := kind[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return fmt.Errorf("%w: kind %q: want [A-Za-z][A-Za-z0-9]*", ErrInvalid, kind)
		}
	}
	return nil
}

// ValidateNamespace checks a namespace ("" allowed); see ValidateKey.
func ValidateNamespace(namespace string) error {
	if namespace == "" {
		return nil
	}
	return validateSegment("namespace", namespace)
}

func validateSegment(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %s %.20q... is longer than %d bytes", ErrInvalid, what, s, MaxNameLen)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("%w: %s %q is reserved", ErrInvalid, what, s)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalid, what, s)
	}
	for _, r := range s {
		if r == '/' || r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s %q contains %q", ErrInvalid, what, s, r)
		}
	}
	return nil
}

// KeyString formats a key for errors: "namespace/name", or "name" when
// cluster-scoped.
func KeyString(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}
