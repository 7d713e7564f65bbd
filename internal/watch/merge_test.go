package watch

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The connection runs with the most watchful of its users' preferences, whatever their order.
func TestMergeTakesTheMostWatchful(t *testing.T) {
	none := prefs{}
	for name, tc := range map[string]struct {
		in   []prefs
		want config
	}{
		"nobody":         {nil, config{healthCheck: DefaultHealthCheck, probe: DefaultProbe}},
		"no preferences": {[]prefs{none, none}, config{healthCheck: DefaultHealthCheck, probe: DefaultProbe}},
		"one asks for notifications": {[]prefs{none, {notifications: true}},
			config{enableNotifications: true, healthCheck: DefaultHealthCheck, probe: DefaultProbe}},
		"shortest health check": {[]prefs{{healthCheck: 5 * time.Second}, {healthCheck: time.Second}, none},
			config{healthCheck: time.Second, probe: DefaultProbe}},
		"a longer health check than the default": {[]prefs{{healthCheck: 10 * time.Second}, none},
			config{healthCheck: 10 * time.Second, probe: DefaultProbe}},
		"shortest probe": {[]prefs{{probe: time.Second}, {probe: 100 * time.Millisecond}},
			config{healthCheck: DefaultHealthCheck, probe: 100 * time.Millisecond}},
		"probe off when one asks and none wants it": {[]prefs{{probe: -1}, none},
			config{healthCheck: DefaultHealthCheck, probe: -1}},
		"an interval asked wins over off": {[]prefs{{probe: -1}, {probe: time.Second}},
			config{healthCheck: DefaultHealthCheck, probe: time.Second}},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, merge(tc.in...))
			for i, j := 0, len(tc.in)-1; i < j; i, j = i+1, j-1 {
				tc.in[i], tc.in[j] = tc.in[j], tc.in[i]
			}
			assert.Equal(t, tc.want, merge(tc.in...), "in the other order")
		})
	}
}
