package redlock

import (
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/locker"
)

// Locker returns the Client as a [keyward.Locker], with opts applied to every lock it takes, so that code written
// for one Redis (lock.Client.Locker) runs on the quorum unchanged. Keys that belong with its locks (an election's
// record) go under the same prefix ([WithPrefix], the Client's or the one in opts).
func (c *Client) Locker(opts ...Option) keyward.Locker {
	o, _ := c.opts.with(opts) // an invalid option is reported by every call, with its error
	return locker.New[*Lock](c, opts, o.Prefix)
}
