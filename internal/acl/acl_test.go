package acl_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/acl"
)

// rules are every documented rule, by feature.
var rules = map[string]string{
	"lock":      acl.Command(acl.Lock),
	"redlock":   acl.Command(acl.Redlock),
	"semaphore": acl.Command(acl.Semaphore),
	"election":  acl.Command(acl.Election),
	"ratelimit": acl.Command(acl.RateLimit),
}

// additions are the documented additions to a rule.
var additions = []string{acl.SemaphoreFencing, acl.KeyspaceNotifications}

// The README and DESIGN.md quote every rule the tests create, verbatim: change a rule here and the documents fail
// this test until they say the same.
func TestDocumentsQuoteTheRules(t *testing.T) {
	for _, doc := range []string{"../../README.md", "../../docs/DESIGN.md"} {
		b, err := os.ReadFile(doc)
		require.NoError(t, err)
		text := string(b)
		for feature, rule := range rules {
			assert.True(t, strings.Contains(text, rule), "%s quotes the %s rule:\n%s", doc, feature, rule)
		}
		for _, a := range additions {
			assert.True(t, strings.Contains(text, "`"+a+"`"), "%s quotes the addition %q", doc, a)
		}
	}
}

func TestWithoutAndCommands(t *testing.T) {
	assert.Equal(t, "reset on +get", acl.Without("reset on +get +set", "+set"))
	assert.Equal(t, []string{"+get", "+set"}, acl.Commands("reset on ~a* +get +set"))
}
