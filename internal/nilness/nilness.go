// Package nilness tells a nil client from a usable one, for the packages that take a client from their user:
// an interface holding a nil pointer is not == nil, and calling through it panics.
package nilness

import (
	"fmt"
	"reflect"

	"github.com/keyward/keyward"
)

// Is reports whether v is nil or an interface holding a nil pointer, map, slice, channel or function.
func Is(v any) bool {
	if v == nil {
		return true
	}
	switch r := reflect.ValueOf(v); r.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface, reflect.UnsafePointer:
		return r.IsNil()
	}
	return false
}

// CheckClient returns an error matching keyward.ErrInvalid for a nil client (or a typed nil), else nil.
func CheckClient(rdb any) error {
	if Is(rdb) {
		return fmt.Errorf("%w: nil redis client", keyward.ErrInvalid)
	}
	return nil
}
