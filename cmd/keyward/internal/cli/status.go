package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/token"
)

const statusUsage = `Usage: keyward status [flags] KEY...

Shows, for each lock KEY: whether it is held, by whom (the host and pid in the holder's token), how long its key
still lives, the fencing token the server remembers for it, and how many processes wait for it in Redis' queue.
The server remembers a lock's last released holder's fence for 2 × its ttl (a quorum lock's nodes: the last
fence handed out); the current holder's fence is known to its process (keyward run gives it as KEYWARD_FENCE).

  $ keyward status nightly-report
  KEY             STATE  HOLDER                   TTL    FENCE             WAITING
  nightly-report  held   host=web-2 pid=4242      9m52s  1767225600123456  1

STATE is held, free, reserved (released and kept for the next waiting process for a short claim window), or
"not a lock" (the key holds another type, or a value another program wrote).

Flags:
  --json           one JSON object per key, in an array (ttl_ms -1: the key has no expiry)
` + connHelp + `
Exit status: 0 every KEY is held (or reserved), 1 some KEY is free or not a lock, 64 bad flags or URL,
69 Redis unreachable or failing, 77 Redis refused the credentials.
`

// Lock states as status shows them.
const (
	stateHeld     = "held"
	stateFree     = "free"
	stateReserved = "reserved"
	stateOther    = "not a lock"
)

// reservedPrefix starts the value of a lock that a release reserved for the next waiting process (release.lua).
const reservedPrefix = "reserved:"

// lockState is what Redis says about one lock.
type lockState struct {
	Key   string `json:"key"`
	State string `json:"state"`
	// Holder is the metadata of the holder's token ("host=… pid=…").
	Holder string `json:"holder,omitempty"`
	// Value is the whole value stored under the lock key.
	Value string `json:"value,omitempty"`
	// TTL is the key's remaining time to live; -1 ms when it has no expiry, 0 when free.
	TTL time.Duration `json:"-"`
	// TTLms is TTL in milliseconds, for JSON.
	TTLms int64 `json:"ttl_ms"`
	// Fence is the fencing counter: the last released holder's fence (a quorum lock's: the last handed out), kept
	// for 2 × ttl (0: none known).
	Fence int64 `json:"fence,omitempty"`
	// Waiting is the number of processes queued for the lock in Redis.
	Waiting int64 `json:"waiting"`
	// Type is the Redis type of a key that is not a lock.
	Type string `json:"type,omitempty"`
}

// snapshot reads the lock named key (Redis key name) in one MULTI/EXEC, so that the parts agree.
func snapshot(ctx context.Context, rdb redis.Cmdable, key, name string) (lockState, error) {
	n := keys.For(name)
	var typ *redis.StatusCmd
	var val, fence *redis.StringCmd
	var ttl *redis.DurationCmd
	var waiting *redis.IntCmd
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		typ = p.Type(ctx, n.Lock)
		val = p.Get(ctx, n.Lock)
		ttl = p.PTTL(ctx, n.Lock)
		fence = p.Get(ctx, n.Fence)
		waiting = p.ZCard(ctx, n.Queue)
		return nil
	})
	s := lockState{Key: key}
	if typ.Err() != nil {
		return s, typ.Err()
	}
	if err != nil && !isReplyErr(err) {
		return s, err
	}
	s.Fence, _ = strconv.ParseInt(fence.Val(), 10, 64)
	s.Waiting = waiting.Val()
	switch t := typ.Val(); {
	case t == "none":
		s.State = stateFree
		return s, nil
	case t != "string":
		s.State, s.Type = stateOther, t
		return s, nil
	}
	if val.Err() != nil {
		return s, val.Err()
	}
	s.Value = val.Val()
	s.TTL = ttl.Val()
	s.TTLms = s.TTL.Milliseconds()
	if s.TTL < 0 {
		s.TTLms = -1
	}
	switch h := token.Parse(s.Value); {
	case strings.HasPrefix(s.Value, reservedPrefix):
		s.State = stateReserved
	case s.TTL < 0:
		// keyward locks always expire: a string without a ttl was written by something else.
		s.State, s.Type = stateOther, "string without expiry"
	default:
		s.State, s.Holder = stateHeld, h.Metadata
	}
	return s, nil
}

func isReplyErr(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply)
}

// describe is the one-line account of a lock that messages use.
func (s lockState) describe() string {
	switch s.State {
	case stateHeld:
		h := s.Holder
		if h == "" {
			h = "a holder without metadata"
		}
		return fmt.Sprintf("%s, ttl %s", h, formatTTL(s.TTL))
	case stateReserved:
		return "the next waiting process (reserved for its claim window)"
	case stateOther:
		return "another program (" + s.Type + ")"
	}
	return ""
}

// formatTTL rounds a ttl for people: milliseconds under a second, tenths under a minute, seconds above.
func formatTTL(d time.Duration) string {
	switch {
	case d < 0:
		return "no expiry"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func statusCommand(ctx context.Context, env Env, args []string) error {
	var conn connFlags
	var asJSON bool
	fs := newFlagSet("status")
	conn.register(fs)
	fs.BoolVar(&asJSON, "json", false, "")
	names, err := parse(fs, args, -1)
	if done, err := help(env, statusUsage, err); done || err != nil {
		return err
	}
	if err := checkKeys(names, "keyward status [flags] KEY..."); err != nil {
		return err
	}
	rdb, _, err := conn.connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()

	var states []lockState
	allHeld := true
	for _, k := range names {
		s, err := snapshot(ctx, rdb, k, conn.prefix+k)
		if err != nil {
			return exitWith(exitFor(err), fmt.Errorf("lock %q: %v", k, explain(err)))
		}
		states = append(states, s)
		allHeld = allHeld && (s.State == stateHeld || s.State == stateReserved)
	}
	if asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(states); err != nil {
			return err
		}
	} else {
		printStates(env, states)
	}
	if !allHeld {
		return exitWith(ExitNotHeld, nil)
	}
	return nil
}

func printStates(env Env, states []lockState) {
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTATE\tHOLDER\tTTL\tFENCE\tWAITING")
	for _, s := range states {
		holder, ttl, fence := "-", "-", "-"
		switch s.State {
		case stateHeld:
			holder = s.Holder
			if holder == "" {
				holder = "(token without metadata)"
			}
			ttl = formatTTL(s.TTL)
		case stateReserved:
			holder = "(next waiting process)"
			ttl = formatTTL(s.TTL)
		case stateOther:
			holder = "(" + s.Type + ")"
		}
		if s.Fence > 0 {
			fence = strconv.FormatInt(s.Fence, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", s.Key, s.State, holder, ttl, fence, s.Waiting)
	}
	_ = tw.Flush()
}
