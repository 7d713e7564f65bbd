package lock

import (
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/locker"
)

// Locker returns the Client as a [keyward.Locker], with opts applied to every lock it takes, for code that must
// work on one Redis or a Redlock quorum alike.
func (c *Client) Locker(opts ...Option) keyward.Locker { return locker.New[*Lock](c, opts) }
