package main

// Packages whose tests should catch a mutation.
const (
	pScript    = "./internal/script/"
	pLease     = "./internal/lease/"
	pLock      = "./lock/"
	pRedlock   = "./redlock/"
	pSemaphore = "./semaphore/"
	pElection  = "./election/"
	pKeyspace  = "./internal/watch/"
	pWaitq     = "./internal/waitq/"
	pRatelimit = "./ratelimit/"
)

// mutations is the list of injected bugs: each a small, realistic mistake in a place where a mistake costs
// safety (two holders, a stale write accepted) or liveness (a waiter that is never woken, a hand-over that never
// happens). Old must occur exactly once in File.
var mutations = []mutation{
	// The Lua scripts.
	{
		Name: "acquire-ignores-holder",
		Bug:  "the acquire script takes a lock that another holder has",
		File: "internal/script/acquire.lua",
		Old:  "if current and current ~= ARGV[1] and not",
		New:  "if false and current and current ~= ARGV[1] and not",
		Pkgs: []string{pScript, pLock},
	},
	{
		Name: "acquire-takes-any-reservation",
		Bug:  "a reservation for one waiting process can be claimed by any process",
		File: "internal/script/acquire.lua",
		Old:  "not (waiter ~= '' and current == 'reserved:' .. waiter)",
		New:  "not (waiter ~= '' and current:sub(1, 9) == 'reserved:')",
		Pkgs: []string{pScript, pLock},
	},
	{
		Name: "refresh-no-token-check",
		Bug:  "refresh extends the key without the token check",
		File: "internal/script/refresh.lua",
		Old:  "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n  return 0\nend\n",
		New:  "",
		Pkgs: []string{pScript, pLock, pElection},
	},
	{
		Name: "release-no-token-check",
		Bug:  "release deletes the key without the token check",
		File: "internal/script/release.lua",
		Old:  "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n  return {0, 0}\nend\n",
		New:  "",
		Pkgs: []string{pScript, pLock},
	},
	{
		Name: "release-no-publish",
		Bug:  "release frees the lock without publishing",
		File: "internal/script/release.lua",
		Old:  "  local told = type(redis.pcall(publish, KEYS[2], '')) ~= 'table'",
		New:  "  local told = true",
		Pkgs: []string{pScript, pLock},
	},
	{
		Name: "release-reserves-untold",
		Bug:  "release reserves the lock for the next process without telling it",
		File: "internal/script/release.lua",
		Old:  "if announce(publish, KEYS[2], 'r ' .. id .. ' ' .. window) then",
		New:  "if true then",
		Pkgs: []string{pScript, pLock},
	},
	{
		Name: "handover-holder-fence",
		Bug:  "the in-script hand-over gives the successor the holder's fence",
		File: "internal/script/release.lua",
		Old:  "local fence = math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]), math.max(held, counter or 0) + 1)",
		New:  "local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])",
		Pkgs: []string{pScript, pLock},
	},
	{
		Name: "handover-ignores-other-processes",
		Bug:  "the in-script hand-over to the holder's own successor ignores the cohort limit (other processes starve)",
		File: "internal/script/release.lua",
		Old:  "if successor ~= '' and (cohort or others == 0) then",
		New:  "if successor ~= '' then",
		Pkgs: []string{pScript, pLock},
	},
	{
		Name: "release-forgets-fence",
		Bug:  "a release does not remember the holder's fence (the next holder's equals it while the clock stands still)",
		File: "internal/script/release.lua",
		Old:  "local remember = held > 0 and (not counter or counter < held)",
		New:  "local remember = false",
		Pkgs: []string{pScript, pLock},
	},
	{
		Name: "release-lowers-counter",
		Bug:  "a release sets the counter to the holder's fence even when the counter is above it",
		File: "internal/script/release.lua",
		Old:  "local remember = held > 0 and (not counter or counter < held)",
		New:  "local remember = held > 0",
		Pkgs: []string{pScript},
	},
	{
		Name: "fast-try-ignores-counter",
		Bug:  "the try without a script takes the clock as the fence, not max(clock, counter + 1)",
		File: "internal/script/fast.go",
		Old:  "fence = max(fence, c+1)",
		New:  "_ = c",
		Pkgs: []string{pScript, pLock},
	},
	{
		Name: "fence-not-above-clock",
		Bug:  "the fence is the counter + 1, not max'ed with the server's clock (goes back after a restart)",
		File: "internal/script/fence.lua",
		Old:  "local fence = math.max((counter or 0) + 1, clock_fence(t, floor))",
		New:  "local fence = (counter or 0) + 1",
		Pkgs: []string{pScript, pLock},
	},
	{
		Name: "raise-does-not-write",
		Bug:  "the raise script answers the fence without raising the counter",
		File: "internal/script/raise.lua",
		Old:  "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n",
		New:  "",
		Pkgs: []string{pScript, pRedlock},
	},
	{
		Name: "giveback-strands-reservation",
		Bug:  "a process that gives up leaves the queue but keeps a reservation made for it",
		File: "internal/script/giveback.lua",
		Old:  "local reserved = redis.call('GET', KEYS[1]) == 'reserved:' .. ARGV[1]",
		New:  "local reserved = false",
		Pkgs: []string{pScript, pLock},
	},
	{
		Name: "semaphore-limit-plus-one",
		Bug:  "the semaphore admits limit + 1",
		File: "internal/script/semaphore_acquire.lua",
		Old:  "if mine or holding + reserving < limit then",
		New:  "if mine or holding + reserving <= limit then",
		Pkgs: []string{pScript, pSemaphore},
	},
	{
		Name: "semaphore-refresh-revives",
		Bug:  "a semaphore refresh revives a permit that expired",
		File: "internal/script/semaphore_refresh.lua",
		Old:  "if tonumber(score) <= now then",
		New:  "if false then",
		Pkgs: []string{pScript, pSemaphore},
	},

	// Lease and validity.
	{
		Name: "validity-after-reply",
		Bug:  "lock: the validity deadline is taken after the acquire reply instead of before the request",
		File: "lock/client.go",
		Old:  "return a.c.newLock(a, start, res.Fence), 0, nil",
		New:  "start = time.Now()\n\treturn a.c.newLock(a, start, res.Fence), 0, nil",
		Pkgs: []string{pLock},
	},
	{
		Name: "lease-deadline-from-now",
		Bug:  "lease: the validity deadline counts from the lease's creation, not from the acquire's start",
		File: "internal/lease/lease.go",
		Old:  "until: cfg.Start.Add(cfg.TTL - cfg.Drift.Of(cfg.TTL)),",
		New:  "until: time.Now().Add(cfg.TTL - cfg.Drift.Of(cfg.TTL)),",
		Pkgs: []string{pLease, pLock},
	},
	{
		Name: "lease-no-drift",
		Bug:  "lease: no margin for clock drift",
		File: "internal/lease/lease.go",
		Old:  "until: cfg.Start.Add(cfg.TTL - cfg.Drift.Of(cfg.TTL)),",
		New:  "until: cfg.Start.Add(cfg.TTL),",
		Pkgs: []string{pLease, pLock},
	},
	{
		Name: "lease-refresh-from-reply",
		Bug:  "lease: a refresh moves the deadline from its reply, not from when it was sent",
		File: "internal/lease/lease.go",
		Old:  "l.until = start.Add(ttl - l.drift.Of(ttl))",
		New:  "l.until = time.Now().Add(ttl - l.drift.Of(ttl))\n\t_ = start",
		Pkgs: []string{pLease, pLock},
	},

	// Waiting and hand-over in lock/.
	{
		Name: "waiter-no-ttl-timer",
		Bug:  "a waiter never arms its timer at the holder's remaining ttl",
		File: "lock/obtain.go",
		Old:  "c.failedTries.Add(1)\n\tarm(timer, res.PTTL)",
		New:  "c.failedTries.Add(1)\n\t_ = res.PTTL",
		Pkgs: []string{pLock},
	},
	{
		Name: "waiter-drains-after-try",
		Bug:  "a waiter drains its events after a failed try, dropping a release that landed in between",
		File: "lock/obtain.go",
		Old:  "c.failedTries.Add(1)\n\tarm(timer, res.PTTL)",
		New:  "c.failedTries.Add(1)\n\tselect {\n\tcase <-watch.Ready():\n\tdefault:\n\t}\n\twatch.Events()\n\tarm(timer, res.PTTL)",
		Pkgs: []string{pLock},
	},
	{
		Name: "ambiguous-acquire-not-cleaned",
		Bug:  "an acquire whose reply was lost is not cleaned up (the key it may have set stays)",
		File: "lock/client.go",
		Old:  "if !script.IsReply(err) || res.OK {\n\t\t\ta.cleanUp(ctx)\n\t\t}",
		New:  "_ = script.IsReply",
		Pkgs: []string{pLock},
	},
	{
		Name: "guard-no-owner-check",
		Bug:  "Guard commits without checking that the key still holds the lock's token",
		File: "lock/guard.go",
		Old:  "if v != l.value {",
		New:  "if _ = v; false {",
		Pkgs: []string{pLock},
	},

	{
		Name: "handover-to-trying-waiter",
		Bug:  "a release hands the lock or permit to a waiter whose own try is on its way",
		File: "internal/waitq/waitq.go",
		Old:  "if e := w.entry(); !e.Trying && !e.Handing {",
		New:  "if e := w.entry(); !e.Handing {",
		Pkgs: []string{pWaitq, pLock, pSemaphore},
	},

	// Redlock.
	{
		Name: "redlock-quorum-half",
		Bug:  "redlock's quorum is n/2 instead of n/2+1",
		File: "redlock/client.go",
		Old:  "quorum:   len(nodes)/2 + 1,",
		New:  "quorum:   len(nodes) / 2,",
		Pkgs: []string{pRedlock},
	},
	{
		Name: "redlock-fence-not-raised",
		Bug:  "redlock hands out the largest fence without raising a majority of the nodes to it",
		File: "redlock/acquire.go",
		Old:  "if atFence >= c.quorum {",
		New:  "if atFence >= 1 {",
		Pkgs: []string{pRedlock},
	},
	{
		Name: "redlock-validity-unchecked",
		Bug:  "redlock hands out a lock whose acquisition took longer than its validity",
		File: "redlock/acquire.go",
		Old:  "if drift := c.opts.Drift.Of(a.ttl); fail == nil && !time.Now().Before(start.Add(a.ttl-drift)) {",
		New:  "if drift := c.opts.Drift.Of(a.ttl); false && fail == nil && !time.Now().Before(start.Add(a.ttl-drift)) {",
		Pkgs: []string{pRedlock},
	},

	// Semaphore waiting.
	{
		Name: "semaphore-no-try-after-subscribe",
		Bug:  "a semaphore waiter does not try again after subscribing (a release in between is not heard)",
		File: "semaphore/acquire.go",
		Old:  "s.line.stale = true // try again: a release between the last try and the subscription was not heard",
		New:  "",
		Pkgs: []string{pSemaphore},
	},

	// Election.
	{
		Name: "election-loss-not-noticed",
		Bug:  "a leader whose lock was lost keeps leading (its context is not cancelled)",
		File: "election/campaign.go",
		Old:  "lead.lose(lead.e.wrap(lead.lock.Err()))",
		New:  "",
		Pkgs: []string{pElection},
	},
	{
		Name: "election-context-ignores-deadline",
		Bug:  "the leader's context does not compare the clock with the lease's deadline",
		File: "election/campaign.go",
		Old:  "if time.Now().Before(c.until()) {",
		New:  "if true {",
		Pkgs: []string{pElection},
	},
	{
		Name: "election-record-overwrites-later-term",
		Bug:  "a superseded leader's record overwrites a later term's",
		File: "election/put.lua",
		Old:  "if held and held > term then",
		New:  "if false then",
		Pkgs: []string{pElection},
	},

	// The keyspace watcher's reconnect.
	{
		Name: "watcher-silent-drop",
		Bug:  "a dropped pub/sub connection does not tell the watches Reconnected",
		File: "internal/watch/receive.go",
		Old:  "ch.resubscribing = true\n\t\tfor wt := range ch.watches {\n\t\t\twt.deliver(Event{Kind: Reconnected})\n\t\t}",
		New:  "ch.resubscribing = true",
		Pkgs: []string{pKeyspace, pLock},
	},
	{
		Name: "watcher-silent-resubscribe",
		Bug:  "the confirmation of a subscription made again after a reconnect does not wake the watches",
		File: "internal/watch/receive.go",
		Old:  "ch.resubscribing = false\n\t\t\t\tfor wt := range ch.watches {\n\t\t\t\t\twt.deliver(Event{Kind: Reconnected})\n\t\t\t\t}",
		New:  "ch.resubscribing = false",
		Pkgs: []string{pKeyspace, pLock},
	},
	{
		Name: "watcher-no-resubscribe",
		Bug:  "the watcher reconnects without subscribing its channels again",
		File: "internal/watch/receive.go",
		Old:  "c.sendLocked(\"subscribe\", chans...)",
		New:  "_ = chans",
		Pkgs: []string{pKeyspace, pLock},
	},
	// The rate limiter.
	{
		Name: "ratelimit-forgets-tat",
		Bug:  "the rate limiter's decision ignores the stored arrival time: every call finds a full burst",
		File: "internal/script/ratelimit_take.lua",
		Old:  "  if x > tat then\n    tat = x\n  end",
		New:  "  if false then\n    tat = x\n  end",
		Pkgs: []string{pScript, pRatelimit},
	},
	{
		Name: "ratelimit-burst-plus-one",
		Bug:  "the rate limiter lets one more event through than the burst allows",
		File: "internal/script/ratelimit_take.lua",
		Old:  "local at = finish - tolerance",
		New:  "local at = finish - tolerance - interval",
		Pkgs: []string{pScript, pRatelimit},
	},
	{
		Name: "ratelimit-cancel-moves-later-turns",
		Bug:  "a cancelled reservation gives its tokens back although later reservations were made after it",
		File: "internal/script/ratelimit_cancel.lua",
		Old:  "if x ~= tonumber(ARGV[2]) then",
		New:  "if false then",
		Pkgs: []string{pScript, pRatelimit},
	},
	{
		Name: "ratelimit-hint-ignored",
		Bug:  "a server that lost the limiter's state starts a new burst under the waiters of this process",
		File: "internal/script/ratelimit_take.lua",
		Old:  "if hint > tat then",
		New:  "if false then",
		Pkgs: []string{pScript, pRatelimit},
	},
	{
		Name: "ratelimit-wait-wakes-early",
		Bug:  "Wait wakes before the server's time: the clocks' margin is taken off instead of added",
		File: "ratelimit/ratelimit.go",
		Old:  "at: received.Add(delay + delay/rateMargin)",
		New:  "at: received.Add(delay - delay/rateMargin)",
		Pkgs: []string{pRatelimit},
	},
	{
		Name: "ratelimit-wait-past-deadline",
		Bug:  "Wait reserves a turn that comes after its ctx's deadline",
		File: "ratelimit/ratelimit.go",
		Old:  "maxWait = max(0, int64((left-left/(rateMargin+1))/time.Microsecond))",
		New:  "_ = left",
		Pkgs: []string{pRatelimit},
	},
}
