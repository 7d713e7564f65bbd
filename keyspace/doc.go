// Package keyspace lets a program wait, without polling, until a Redis key may have changed: a keyward lock on it
// released or handed over, the key deleted, expired or evicted.
//
// Every user of one Redis client shares one pub/sub connection (one per master on a Redis Cluster): the
// lock.Clients, the redlock.Clients' nodes, the semaphores and election observers built on that client, and the
// Watchers of this package. Subscriptions are reference-counted, so a thousand waiters on one key cost one
// SUBSCRIBE. The connection is opened by the first wait and closed when the last of its users is closed; closing
// one user never disturbs another. The connection is health-checked, probed end to end after failovers (it must
// hear what is published where the locks live), and follows a key's slot on a cluster; whenever messages may
// have been lost, every watch concerned hears [Reconnected].
//
// A wait that cannot miss a change goes in this order: [Watcher.Watch] the key (it returns once the server
// confirmed the subscription), then look at the key, then [Watch.Wait]. A change after the look is on its way to
// the watch; a change before it was seen by the look. Keep a timer as well: keyspace notifications (deleted,
// expired, evicted) come only from a server that sends them (see [WithNotifications]), and an expiry is announced
// when Redis deletes the key, which can be late.
package keyspace
