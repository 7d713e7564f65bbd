package chaos

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestFailoversMeasure(t *testing.T) {
	const ms = int64(time.Millisecond)
	// held returns a lock obtained at start, valid until until, released at rel with result res (0: never).
	held := func(start, until, rel int64, res string) Record {
		r := Record{Call: start - ms, Start: start, Result: Obtained, Until: until, Release: res}
		if rel > 0 {
			r.RelCall, r.RelEnd = rel, rel+ms
		}
		return r
	}
	span := failoverSpan{Span{From: 1000 * ms, To: 3000 * ms}, 1500 * ms}
	tests := []struct {
		name    string
		records []Record
		want    Failover
	}{
		{
			name: "a holder kept its lock through the switch; the next obtained soon after its release",
			records: []Record{
				held(900*ms, 2500*ms, 2000*ms, Released),
				held(2003*ms, 2250*ms, 2010*ms, Released),
			},
			want: Failover{Took: 2 * time.Second, Switch: 500 * time.Millisecond, Gap: 3 * time.Millisecond, Kept: 1},
		},
		{
			name: "the holder's lock was lost: the next obtained it before the holder let go",
			records: []Record{
				held(1400*ms, 9000*ms, 6000*ms, ReleaseNotHeld),
				held(1540*ms, 1790*ms, 1550*ms, Released),
			},
			want: Failover{Took: 2 * time.Second, Switch: 500 * time.Millisecond, Gap: 40 * time.Millisecond, Lost: 1},
		},
		{
			name: "nobody held the lock at the switch",
			records: []Record{
				held(1000*ms, 1250*ms, 1010*ms, Released),
				held(1700*ms, 1950*ms, 1710*ms, Released),
			},
			want: Failover{Took: 2 * time.Second, Switch: 500 * time.Millisecond, Gap: 200 * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := failovers(tt.records, []failoverSpan{span})
			assert.Equal(t, []Failover{tt.want}, got)
		})
	}
	assert.Equal(t, []Failover{{Took: 2 * time.Second}}, failovers(nil, []failoverSpan{{Span: span.Span}}),
		"a switch not seen: no gap")
}
