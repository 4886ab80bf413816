package worker

import (
	"context"
	"errors"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/engine"
	workerv1 "github.com/tetherfleet/tether/protocol/worker/v1"
)

// sentinels are the errors that keep their identity across the process
// boundary, so errors.Is works on the agent's side as it did in process.
var sentinels = []struct {
	kind workerv1.ErrorKind
	err  error
}{
	{workerv1.ErrorKind_ERROR_KIND_FOREIGN_RELEASE, engine.ErrForeignRelease},
	{workerv1.ErrorKind_ERROR_KIND_INVALID_RELEASE, engine.ErrInvalidRelease},
	{workerv1.ErrorKind_ERROR_KIND_NOT_READY, engine.ErrNotReady},
	{workerv1.ErrorKind_ERROR_KIND_RELEASE_NOT_FOUND, engine.ErrReleaseNotFound},
	{workerv1.ErrorKind_ERROR_KIND_UNKNOWN, engine.ErrUnknown},
	{workerv1.ErrorKind_ERROR_KIND_NOT_FOUND, cache.ErrNotFound},
	{workerv1.ErrorKind_ERROR_KIND_INVALID_RECORD, cache.ErrInvalid},
	{workerv1.ErrorKind_ERROR_KIND_CANCELED, context.Canceled},
	{workerv1.ErrorKind_ERROR_KIND_CANCELED, context.DeadlineExceeded},
}

// ErrorToProto encodes an operation's error for the other side; nil
// stays nil.
func ErrorToProto(err error) *workerv1.Error { return errorToProto(err) }

func errorToProto(err error) *workerv1.Error {
	if err == nil {
		return nil
	}
	e := &workerv1.Error{Message: err.Error()}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			e.Kind = s.kind
			break
		}
	}
	return e
}

// remoteError is an error from the other side: its text as it was, and
// the sentinel of its kind for errors.Is.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

// errorFromProto decodes an operation's error; nil stays nil.
func errorFromProto(e *workerv1.Error) error {
	if e == nil {
		return nil
	}
	re := &remoteError{msg: e.GetMessage()}
	if re.msg == "" {
		re.msg = "helm worker: error without a message"
	}
	for _, s := range sentinels {
		if s.kind == e.GetKind() {
			re.kind = s.err
			break
		}
	}
	return re
}
