package keywardgocron

import "context"

// WaitLeading waits until el leads (IsLeader returns nil), or ctx ends: the election's Obtained event comes a
// moment before the Elector has the leadership in hand.
func WaitLeading(ctx context.Context, el *Elector) error {
	for {
		change := el.change()
		if el.IsLeader(ctx) == nil {
			return nil
		}
		select {
		case <-change:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}
