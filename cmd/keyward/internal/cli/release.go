package cli

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/script"
)

const releaseUsage = `Usage: keyward release --force [flags] KEY...

Deletes the lock KEY whoever holds it, and wakes the processes waiting for it, as the holder's own release
would: for a lock left behind by a holder that is gone, when waiting out its ttl is not an option. The holder
is not asked: if it is still running, it finds out at its next refresh (within a third of its ttl), and
'keyward run' then stops its COMMAND and exits 79. Only the holder that status showed a moment before is
removed: a lock that changed hands in between is left alone.

Flags:
  --force          required: confirms that the holder loses the lock
` + connHelp + `
Exit status: 0 every KEY was released, 1 some KEY was not held (nothing to release) or changed hands, 64 bad
flags, missing --force or bad URL, 69 Redis unreachable or failing, 77 Redis refused the credentials.
`

func releaseCommand(ctx context.Context, env Env, args []string) error {
	var conn connFlags
	var force bool
	fs := newFlagSet("release")
	conn.register(fs)
	fs.BoolVar(&force, "force", false, "")
	names, err := parse(fs, args, -1)
	if done, err := help(env, releaseUsage, err); done || err != nil {
		return err
	}
	if err := checkKeys(names, "keyward release --force [flags] KEY..."); err != nil {
		return err
	}
	if !force {
		return usagef("release takes the lock away from whoever holds it: add --force to confirm")
	}
	rdb, _, err := conn.connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()

	allReleased := true
	for _, k := range names {
		ok, err := forceRelease(ctx, env, rdb, k, conn.prefix+k)
		if err != nil {
			return exitWith(exitFor(err), fmt.Errorf("lock %q: %v", k, explain(err)))
		}
		allReleased = allReleased && ok
	}
	if !allReleased {
		return exitWith(ExitNotHeld, nil)
	}
	return nil
}

// forceRelease releases the lock named name for whoever holds it now, through the release script: the key is
// deleted only if it still holds the value read just before, and waiters are woken.
func forceRelease(ctx context.Context, env Env, rdb redis.UniversalClient, key, name string) (bool, error) {
	s, err := snapshot(ctx, rdb, key, name)
	if err != nil {
		return false, err
	}
	switch s.State {
	case stateFree:
		fmt.Fprintf(env.Stdout, "%s: not held, nothing to release\n", key)
		return false, nil
	case stateOther:
		fmt.Fprintf(env.Stdout, "%s: not a lock (%s); left alone\n", key, s.Type)
		return false, nil
	}
	held, err := script.Release(ctx, rdb, keys.For(name), s.Value, script.PublishPlain)
	if err != nil {
		return false, err
	}
	if !held {
		fmt.Fprintf(env.Stdout, "%s: changed hands while releasing; not released (run status again)\n", key)
		return false, nil
	}
	fmt.Fprintf(env.Stdout, "%s: released (was held by %s)\n", key, s.describe())
	return true, nil
}
