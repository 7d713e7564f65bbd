package redlock

import (
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/locker"
)

// Locker returns the Client as a [keyward.Locker], with opts applied to every lock it takes, so that code written
// for one Redis (lock.Client.Locker) runs on the quorum unchanged. Keys that belong with its locks (an election's
// record) go under the Client's prefix ([WithPrefix]).
func (c *Client) Locker(opts ...ObtainOption) keyward.Locker {
	return locker.New[*Lock](c, opts, c.opts.Prefix)
}
