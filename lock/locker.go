package lock

import (
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/locker"
)

// Locker returns the Client as a [keyward.Locker], with opts applied to every lock it takes, for code that must
// work on one Redis or a Redlock quorum alike. Keys that belong with its locks (an election's record) go under
// the Client's prefix ([WithPrefix]). After Close its calls return an error matching ErrClosed.
func (c *Client) Locker(opts ...ObtainOption) keyward.Locker {
	return locker.New[*Lock](c, opts, c.opts.Prefix)
}
