package chaos

import (
	"cmp"
	"fmt"
	"time"

	"github.com/anishathalye/porcupine"
)

// LinearizabilityResult is porcupine's verdict.
type LinearizabilityResult string

// porcupine's verdicts.
const (
	// Linear: the history is linearizable with the fenced-mutex model.
	Linear LinearizabilityResult = "ok"
	// NotLinear: it is not: some acquire, release or fence cannot be explained by any order.
	NotLinear LinearizabilityResult = "illegal"
	// Undecided: porcupine did not finish within its time limit.
	Undecided LinearizabilityResult = "unknown"
)

type opKind int

const (
	opAcquire opKind = iota
	opRelease
	opExpire // the server expired the holder's key (sometime after its validity deadline)
	opReset  // the server restarted empty: whoever held the key lost it
)

type mutexInput struct {
	kind   opKind
	holder int // index of the holder's record
}

type mutexOutput struct {
	fence   int64  // acquire
	release string // release: Released, ReleaseNotHeld, or "?" (outcome unknown)
}

type mutexState struct {
	holder int // -1: free
	fence  int64
}

// fencedMutex is the model: a mutex whose acquisitions hand out strictly increasing fences, whose release
// succeeds only for the current holder, and whose holder may lose it only by expiry (not before its validity
// deadline: the expire operation's interval starts there) or by a server restart.
var fencedMutex = porcupine.Model{
	Init: func() any { return mutexState{holder: -1} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(mutexState), input.(mutexInput), output.(mutexOutput)
		switch in.kind {
		case opAcquire:
			if s.holder != -1 || out.fence <= s.fence {
				return false, s
			}
			return true, mutexState{holder: in.holder, fence: out.fence}
		case opRelease:
			switch out.release {
			case Released:
				if s.holder != in.holder {
					return false, s
				}
				return true, mutexState{holder: -1, fence: s.fence}
			case ReleaseNotHeld:
				return s.holder != in.holder, s
			}
			// Unknown outcome: if the key was still this holder's, the release deleted it (the most permissive
			// choice; the holder's expire operation covers the other case).
			fallthrough
		case opExpire:
			if s.holder == in.holder {
				return true, mutexState{holder: -1, fence: s.fence}
			}
			return true, s
		case opReset:
			return true, mutexState{holder: -1, fence: s.fence}
		}
		return false, s
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(mutexInput), output.(mutexOutput)
		switch in.kind {
		case opAcquire:
			return fmt.Sprintf("acquire#%d → fence %d", in.holder, out.fence)
		case opRelease:
			return fmt.Sprintf("release#%d → %s", in.holder, out.release)
		case opExpire:
			return fmt.Sprintf("expire#%d", in.holder)
		}
		return "server restarted empty"
	},
}

// Linearizable checks the acquire/release history of h with porcupine against a fenced-mutex model: a second
// opinion on the checker's fence, overlap and release findings. Failed attempts are left out (an ambiguous
// acquire that did take the lock, and was then released, only removes constraints). Each holder that did not
// release cleanly gets an expire operation between its validity deadline and the latest moment its key can
// have lived on the server (its obtain's return + ttl, or its release's end + ttl for a lock refreshed until
// then); each server restart, or failover that lost writes, a reset. timeout bounds the search
// (0: 10 s).
func Linearizable(h History, timeout time.Duration) LinearizabilityResult {
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	var ops []porcupine.Operation
	var end int64
	for _, r := range h.Records {
		end = max(end, r.Start, r.RelEnd)
	}
	end++
	const slack = int64(5 * time.Millisecond) // the server's expiry is rounded to milliseconds
	for i, r := range h.Records {
		if !r.HasLock() {
			continue
		}
		ops = append(ops, porcupine.Operation{ClientId: r.Worker*1000 + r.G, Input: mutexInput{opAcquire, i},
			Call: r.Call, Output: mutexOutput{fence: r.Fence}, Return: r.Start})
		if r.RelCall > 0 {
			out, ret := r.Release, r.RelEnd
			switch {
			case out == ReleaseLost, out == ReleaseFailed, out == ReleaseNotHeld && h.AmbiguousReleases:
				out = "?"
			}
			if r.Release == ReleaseFailed {
				ret = end // it may still take effect
			}
			ops = append(ops, porcupine.Operation{ClientId: r.Worker*1000 + r.G, Input: mutexInput{opRelease, i},
				Call: r.RelCall, Output: mutexOutput{release: out}, Return: ret})
		}
		if r.Release != Released {
			ttl := cmp.Or(r.TTL, int64(h.TTL))
			expiry := r.Start + ttl + slack
			if r.AutoRefresh {
				expiry = max(r.Start, r.RelEnd) + ttl + slack // refreshed until the release
			}
			ops = append(ops, porcupine.Operation{ClientId: -1, Input: mutexInput{opExpire, i},
				Call: min(r.Until, expiry), Output: mutexOutput{}, Return: expiry})
		}
	}
	for _, s := range h.Resets {
		ops = append(ops, porcupine.Operation{ClientId: -2, Input: mutexInput{kind: opReset},
			Call: s.From, Output: mutexOutput{}, Return: s.To})
	}
	switch porcupine.CheckOperationsTimeout(fencedMutex, ops, timeout) {
	case porcupine.Ok:
		return Linear
	case porcupine.Illegal:
		return NotLinear
	}
	return Undecided
}
