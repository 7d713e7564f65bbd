package election

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/bound"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/script"
)

var (
	//go:embed put.lua
	putSrc string
	//go:embed vacate.lua
	vacateSrc string

	putScript    = redis.NewScript(putSrc)
	vacateScript = redis.NewScript(vacateSrc)
)

// errSuperseded: the record holds a later term than the leader that tried to write it.
var errSuperseded = fmt.Errorf("%w: a later term leads", keyward.ErrGone)

// A record is where an election says who leads: a string key "<term> <identity>" that expires with the leader's
// lease, and the channel on which every new leader and every resignation is announced. Leader reads it; Observe
// subscribes to the channel and reads it again when messages may have been missed.
//
// The channel is the one a watch of the record key subscribes to, on the pub/sub connection its client shares
// with lock waiters and every other user, and keyspace notifications for the record (deleted, expired, evicted)
// reach observers too when the server sends them.
type record struct {
	key     string
	channel string
}

// newRecord returns the record of the election whose lock key (prefix and name) is lockKey: "{lockKey}:leader",
// in the cluster slot of the lock key.
func newRecord(lockKey string) record {
	key := keys.Derive(lockKey, "leader")
	return record{key: key, channel: keys.For(key).Channel}
}

// put writes that identity leads term, with ttl of lease left, unless a later term already leads; that is
// errSuperseded (which matches ErrLost).
func (r record) put(ctx context.Context, rdb redis.UniversalClient, term int64, identity string, ttl time.Duration) error {
	ms := ttl.Milliseconds()
	if ms < 1 {
		return fmt.Errorf("%w: the lease ran out", keyward.ErrLeaseExpired)
	}
	// Bounded by ctx whatever rdb's options: a renewal must end by the lease's deadline.
	ok, err := putScript.Run(ctx, bound.New(rdb).Scripter(), []string{r.key, r.channel}, term, identity, ms).Int64()
	if err != nil {
		return fmt.Errorf("record leader: %w", script.Classify(err))
	}
	if ok == 0 {
		return errSuperseded
	}
	return nil
}

// vacate deletes the record of term, if it still holds term, and announces the vacancy.
func (r record) vacate(ctx context.Context, rdb redis.UniversalClient, term int64) error {
	if err := vacateScript.Run(ctx, bound.New(rdb).Scripter(), []string{r.key, r.channel}, term).Err(); err != nil {
		return fmt.Errorf("vacate record: %w", script.Classify(err))
	}
	return nil
}

// read returns the leader the record names, with its remaining lease, or ok=false when nobody leads.
func (r record) read(ctx context.Context, rdb redis.UniversalClient) (l Leader, ok bool, err error) {
	type reply struct {
		get  *redis.StringCmd
		pttl *redis.DurationCmd
		err  error
	}
	rep := bound.Do(bound.New(rdb), ctx, func(rdb redis.UniversalClient) (rep reply) {
		_, rep.err = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			rep.get = p.Get(ctx, r.key)
			rep.pttl = p.PTTL(ctx, r.key)
			return nil
		})
		return rep
	}, func(err error) reply { return reply{err: err} })
	get, pttl := rep.get, rep.pttl
	err = rep.err
	if errors.Is(err, redis.Nil) && get.Err() == redis.Nil && pttl.Err() == nil {
		return Leader{}, false, nil
	}
	if err != nil && redis.IsExecAbortError(err) {
		// Redis discards a transaction whose queued command it refused (a user without GET or PTTL) with a bare
		// EXECABORT; the reason is that command's own error, which go-redis keeps on it.
		for _, cmd := range []redis.Cmder{get, pttl} {
			if cerr := cmd.Err(); cerr != nil && !errors.Is(cerr, redis.Nil) && !redis.IsExecAbortError(cerr) {
				err = fmt.Errorf("%w (the transaction was discarded)", cerr)
				break
			}
		}
	}
	if err != nil {
		return Leader{}, false, fmt.Errorf("read record: %w", script.Classify(err))
	}
	term, identity, ok := parseRecord(get.Val())
	if !ok {
		return Leader{}, false, fmt.Errorf("%w: record %q holds %q, not \"<term> <identity>\"",
			keyward.ErrWrongType, r.key, get.Val())
	}
	ttl := pttl.Val()
	if ttl < 0 {
		ttl = 0 // no expiry (-1): not written by an election; unknown
	}
	return Leader{Identity: identity, Term: term, TTL: ttl}, true, nil
}

// parseRecord reads "<term> <identity>".
func parseRecord(v string) (term int64, identity string, ok bool) {
	t, identity, found := strings.Cut(v, " ")
	term, err := strconv.ParseInt(t, 10, 64)
	if !found || err != nil || term <= 0 || identity == "" {
		return 0, "", false
	}
	return term, identity, true
}

// change is what a message on the record's channel announces.
type change struct {
	elected bool   // a new leader; else a vacancy
	leader  Leader // the new leader, or the term that ended (Term only)
}

// parseChange reads "elected <term> <ttl ms> <identity>" or "vacated <term>".
func parseChange(payload string) (change, bool) {
	kind, rest, _ := strings.Cut(payload, " ")
	switch kind {
	case "elected":
		f := strings.SplitN(rest, " ", 3)
		if len(f) != 3 || f[2] == "" {
			return change{}, false
		}
		term, err1 := strconv.ParseInt(f[0], 10, 64)
		ms, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || term <= 0 {
			return change{}, false
		}
		return change{elected: true, leader: Leader{Identity: f[2], Term: term, TTL: time.Duration(ms) * time.Millisecond}}, true
	case "vacated":
		term, err := strconv.ParseInt(rest, 10, 64)
		if err != nil || term <= 0 {
			return change{}, false
		}
		return change{leader: Leader{Term: term}}, true
	}
	return change{}, false
}
