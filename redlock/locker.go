package redlock

import (
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/locker"
)

// Locker returns the Client as a [keyward.Locker], with opts applied to every lock it takes, so that code written
// for one Redis (lock.Client.Locker) runs on the quorum unchanged.
func (c *Client) Locker(opts ...Option) keyward.Locker { return locker.New[*Lock](c, opts) }
