package redistest

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
)

// AssertCtxErr checks the shape every package gives the error of a call stopped by its ctx: it matches ctxErr
// (context.Canceled or context.DeadlineExceeded) and cause (unless nil), is the shared context error, is neither an
// ErrInvalid nor an ErrClosed, and names key (in quotes).
func AssertCtxErr(t testing.TB, err error, key string, ctxErr, cause error) {
	t.Helper()
	require.Error(t, err)
	assert.ErrorIs(t, err, ctxErr)
	if cause != nil {
		assert.ErrorIs(t, err, cause)
	}
	assert.True(t, errs.IsContext(err), "the shared context error: %v", err)
	assert.NotErrorIs(t, err, keyward.ErrInvalid)
	assert.NotErrorIs(t, err, keyward.ErrClosed)
	assert.Contains(t, err.Error(), strconv.Quote(key))
}
