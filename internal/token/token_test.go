package token_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward/internal/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewIsRandomAndCarriesMetadata(t *testing.T) {
	a, b := token.New(""), token.New("")
	assert.Len(t, a, 22, "128 bits in unpadded base64url")
	assert.NotEqual(t, a, b)

	v := token.New(token.DefaultMetadata())
	h := token.Parse(v)
	assert.Len(t, h.Token, 22)
	pid, ok := h.PID()
	require.True(t, ok)
	assert.Equal(t, os.Getpid(), pid)
	assert.NotEmpty(t, h.Fields["host"])
}

func TestParse(t *testing.T) {
	tests := []struct {
		name, value string
		want        token.Holder
	}{
		{"bare token", "abc", token.Holder{Token: "abc"}},
		{"redsync value", "q83vEjRWeJA=", token.Holder{Token: "q83vEjRWeJA="}},
		{"fields", "abc host=h pid=42", token.Holder{Token: "abc", Metadata: "host=h pid=42",
			Fields: map[string]string{"host": "h", "pid": "42"}}},
		{"free text", "abc nightly job", token.Holder{Token: "abc", Metadata: "nightly job"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, token.Parse(tt.value))
		})
	}
	_, ok := token.Parse("abc host=h").PID()
	assert.False(t, ok)
}
