// Package errs builds the errors that every package of the library returns for the same situations, so that they
// have one shape: `<package> "<key>": <operation>: <error>`, the way every package wraps its errors, with a keyward
// sentinel (or the context's error) and the cause, all matchable with errors.Is.
package errs

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyward/keyward"
)

// Context returns the error of an operation (op, e.g. "obtain") of package pkg (e.g. "lock") on key that stopped
// because ctx ended: it matches ctx.Err() (context.Canceled or context.DeadlineExceeded) and context.Cause(ctx)
// when a cause was set, and names the key. It returns nil while ctx has not ended. A nil ctx is not a context
// that ended but an invalid argument: Context returns NilContext's error for it, so every call that checks its
// ctx here refuses a nil one instead of panicking.
func Context(ctx context.Context, pkg, op, key string) error {
	if ctx == nil {
		return NilContext(pkg, op, key)
	}
	err := ctx.Err()
	if err == nil {
		return nil
	}
	return &ctxError{pkg: pkg, op: op, key: key, err: err, cause: context.Cause(ctx)}
}

type ctxError struct {
	pkg, op, key string
	err, cause   error
}

func (e *ctxError) Error() string {
	s := fmt.Sprintf("%s %q: %s: %v", e.pkg, e.key, e.op, e.err)
	if e.cause != nil && e.cause != e.err {
		s += ": " + e.cause.Error()
	}
	return s
}

func (e *ctxError) Unwrap() []error {
	if e.cause == nil || e.cause == e.err {
		return []error{e.err}
	}
	return []error{e.err, e.cause}
}

// NilContext returns the error of an operation (op) of package pkg on key that was given a nil ctx:
// `<pkg> "<key>": <op>: keyward: invalid argument: nil ctx`, matching keyward.ErrInvalid. A public method checks
// `ctx == nil` first and returns it, before it uses ctx or changes anything.
func NilContext(pkg, op, key string) error {
	return fmt.Errorf("%s %q: %s: %w: nil ctx", pkg, key, op, keyward.ErrInvalid)
}

// IsContext reports whether err is an error of Context for a ctx that ended (not NilContext's).
func IsContext(err error) bool {
	var ce *ctxError
	return errors.As(err, &ce)
}

// Closed returns the error of an operation (op) of package pkg on key after Close: it matches keyward.ErrClosed
// and names the key.
func Closed(pkg, op, key string) error {
	return fmt.Errorf("%s %q: %s: %w", pkg, key, op, keyward.ErrClosed)
}
