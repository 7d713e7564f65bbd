package keyward_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/keyward/keyward"
)

// A loss's reason matches ErrLost and ErrNotHeld, reads like ErrLost, and is not the other reason.
func TestLossReasonsAreLosses(t *testing.T) {
	for _, reason := range []error{keyward.ErrLeaseExpired, keyward.ErrGone} {
		err := fmt.Errorf("lock %q: %w: why", "k", reason)
		for _, target := range []error{reason, keyward.ErrLost, keyward.ErrNotHeld} {
			if !errors.Is(err, target) {
				t.Errorf("errors.Is(%v, %v) = false, want true", err, target)
			}
		}
		if reason.Error() != keyward.ErrLost.Error() {
			t.Errorf("%v reads %q, want ErrLost's %q", reason, reason.Error(), keyward.ErrLost.Error())
		}
		for _, other := range []error{keyward.ErrLeaseExpired, keyward.ErrGone} {
			if other != reason && errors.Is(err, other) {
				t.Errorf("errors.Is(%v, %p) = true for the other reason", err, other)
			}
		}
	}
	if errors.Is(keyward.ErrLost, keyward.ErrGone) || errors.Is(keyward.ErrLost, keyward.ErrLeaseExpired) {
		t.Error("ErrLost itself matches a reason")
	}
	if errors.Is(keyward.ErrNotHeld, keyward.ErrLost) {
		t.Error("ErrNotHeld matches ErrLost")
	}
}
