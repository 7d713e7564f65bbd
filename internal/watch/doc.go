// Package watch tells waiters the moment a Redis key they wait for may have become free, without polling: the
// machinery of lock, redlock, semaphore, election and the public keyspace package.
//
// One Watcher per Redis client is shared by every user of that client: [Attach] returns a user's [Handle] on it
// (creating it with the first user), and the last Handle's Close closes it. A Handle's watches are its own:
// closing it ends them and leaves the other users' alone. Each user gives its preferences for the connections
// (merged: the most watchful wins, see merge) and its observer, which hears the Watcher's Reconnected and Error
// events with Source "keyspace".
//
// A [Watcher] owns the pub/sub connections to one Redis deployment — one for a single server or a
// Sentinel-managed primary, one per master for a cluster — and multiplexes any number of waiters over them:
// subscriptions are reference-counted (SUBSCRIBE on a channel's first waiter, UNSUBSCRIBE after its last).
// [Watcher.Watch] returns only once the server has confirmed the subscription, so that a waiter that tries to
// take a lock after Watch returns cannot miss a release that happens after its try: that release's message is
// on its way.
//
// A watch receives:
//
//   - the messages keyward's release script publishes on the lock's channel (every server has pub/sub);
//   - keyspace notifications for the key (del, expired, evicted) when the server has them on
//     (notify-keyspace-events); they are detected with CONFIG GET, and a refused CONFIG (managed Redis,
//     miniredis) counts as off. [WithNotifications] turns the needed flags on, keeping the others. On a
//     cluster, a key's channels are subscribed on the master that serves its slot, since notifications are
//     local to that node, and they follow the slot when it moves;
//   - a Reconnected event whenever messages may have been lost: the connection dropped, stopped answering its
//     health check, or was found deaf by the probe (it no longer hears what is published where the locks live,
//     as after a Sentinel failover or a DNS switch to a new primary: see [WithProbe]), or the key moved to
//     another cluster master. Every waiter concerned is told to look again, and once more when it is
//     subscribed again;
//   - a Failed event when the server refuses the subscription (an ACL user without permission for the channel):
//     [Watch.Err] then says why, with an error matching keyward.ErrNoPermission. Watch itself returns that error
//     when the refusal comes first.
//
// [Watcher.Close] ends the connections and wakes every waiter with a Closed event; no goroutine survives it.
// A watch returns errors in the library's shape: keyward.ErrClosed (with the key) after Close, and the ctx's
// error and cause (errs.Context) when the ctx of Watch ends first.
package watch
