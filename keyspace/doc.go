// Package keyspace tells waiters the moment a Redis key they wait for may have become free, without polling.
//
// A [Watcher] owns one pub/sub connection to one Redis deployment and multiplexes any number of waiters over it:
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
//     miniredis) counts as off. [WithNotifications] turns the needed flags on, keeping the others;
//   - a Reconnected event whenever the connection dropped (or stopped answering its health check) and came back:
//     messages may have been lost meanwhile, so every waiter is told to look again.
//
// [Watcher.Close] ends the connection and wakes every waiter with a Closed event; no goroutine survives it.
package keyspace
