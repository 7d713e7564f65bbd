package script_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/script"
)

// aclClient creates the ACL user name with rules on the server admin is connected to (replacing an earlier one),
// and returns a client that logs in as that user, with go-redis's default options otherwise.
func aclClient(t *testing.T, srv *redistest.Server, admin *redis.Client, name string, rules ...string) *redis.Client {
	t.Helper()
	args := []any{"ACL", "SETUSER", name, "reset", "on", ">secret"}
	for _, r := range rules {
		args = append(args, r)
	}
	require.NoError(t, admin.Do(context.Background(), args...).Err())
	return redistest.NewClient(t, &redis.Options{Addr: srv.Addr(), Username: name, Password: "secret"})
}

// The users of the refusals below.
var (
	// The user of the report: TIME is in none of these categories (only @fast), so it may not run it.
	reportedUser = []string{"~*", "&*", "+@read", "+@write", "+@scripting", "+@pubsub", "-@dangerous"}
	noPublish    = []string{"~*", "resetchannels", "+@all"}
)

// TestClassifyNoPermission: the texts of redis-server 7.0.15's ACL refusals, outside a script and inside one.
func TestClassifyNoPermission(t *testing.T) {
	for _, msg := range []string{
		"NOPERM this user has no permissions to run the 'time' command",
		"NOPERM this user has no permissions to access one of the keys used as arguments",
		"NOPERM this user has no permissions to access one of the channels used as arguments",
		"ERR The user executing the script can't run this command or subcommand script: " +
			"104ae65debf45156ded1e8e613705534c8e62c17, on @user_script:1.",
		"ERR The user executing the script can't access at least one of the keys mentioned in the command " +
			"arguments script: fe46a1564c08d36cdc4f5a0ee9d6bc48aad2873b, on @user_script:1.",
		"ERR The user executing the script can't publish to the channel mentioned in the command script: " +
			"8b4aa00323eeee47429830cc15ea3f9a0cec3483, on @user_script:1.",
	} {
		err := script.Classify(proto(msg))
		assert.ErrorIs(t, err, keyward.ErrNoPermission, msg)
		assert.True(t, script.IsReply(err), "the reply stays in the chain")
		assert.Contains(t, err.Error(), msg)
	}
	assert.NotErrorIs(t, script.Classify(proto("ERR unknown command 'x'")), keyward.ErrNoPermission)
}

// proto is a Redis error reply as go-redis returns it.
type proto string

func (e proto) Error() string { return string(e) }
func (proto) RedisError()     {}

// TestRefusalsInsideScripts checks the texts TestClassifyNoPermission relies on against the real server: a command,
// a key and a channel refused inside a script.
func TestRefusalsInsideScripts(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	for _, tc := range []struct {
		rules  []string
		script string
		want   string
	}{
		{reportedUser, "return redis.call('TIME')", "ERR The user executing the script can't run this command or subcommand"},
		{[]string{"~lock", "&*", "+@all"}, "return redis.call('GET', 'other')",
			"ERR The user executing the script can't access at least one of the keys mentioned in the command arguments"},
		{noPublish, "return redis.call('PUBLISH', 'ch', 'x')",
			"ERR The user executing the script can't publish to the channel mentioned in the command"},
	} {
		user := aclClient(t, srv, admin, "app", tc.rules...)
		err := script.Classify(user.Eval(ctx, tc.script, nil).Err())
		require.ErrorIs(t, err, keyward.ErrNoPermission)
		assert.Contains(t, err.Error(), tc.want)
	}
}
