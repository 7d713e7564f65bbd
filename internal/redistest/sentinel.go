package redistest

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the name under which the sentinels of a
// SentinelGroup monitor its master (FailoverOptions.MasterName).
const SentinelMasterName = "kwmaster"

// sentinelCount is the number of sentinels of a group (testdata/sentinel.conf has their settings: two must
// agree that the master is down).
const sentinelCount = 3

// The config files of the rig's deployments (see the files for what each setting is for).
var (
	//go:embed testdata/data-node.conf
	dataNodeConf string
	//go:embed testdata/cluster-node.conf
	clusterNodeConf string
	//go:embed testdata/sentinel.conf
	sentinelConfText string
	sentinelConfTmpl = template.Must(template.New("sentinel.conf").Parse(sentinelConfText))
)

// SentinelGroup is a Redis Sentinel deployment owned by a test: one master
// and one replica (the data nodes) and three sentinels that monitor the
// master under SentinelMasterName with quorum 2, all redis-server processes
// on free loopback ports. The sentinels run as `redis-server <conf>
// --sentinel` with a config file of their own, which they rewrite (see
// Server.Restart). The sentinels detect a master that does not answer for
// 1.5 s (down-after-milliseconds) and have a failover-timeout of 3 s
// (testdata/sentinel.conf).
//
// Which data node is the master changes with failovers: ask Master and
// Replica each time. Every process is killed when the test ends. The methods
// are safe for concurrent use, but the failovers are not meant to overlap.
type SentinelGroup struct {
	data      []*Server // the two data nodes
	sentinels []*Server
}

// StartSentinel starts a SentinelGroup. The options (WithNotify, WithArgs,
// ...) apply to the two data nodes only. It returns once the replica is in
// sync with the master and every sentinel agrees on the master, knows the
// replica and knows the two other sentinels, so that a failover can start
// at once. It fails the test if that takes longer than 20 s, and calls
// Require first.
func StartSentinel(t testing.TB, opts ...Option) *SentinelGroup {
	t.Helper()
	Require(t)
	ports, err := freePorts(2+sentinelCount, false)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	g := &SentinelGroup{}
	// One after the other: should the master have to move to another
	// port, the replica and the sentinels must know.
	master := startOne(t, ports[0], dataNodeOpts(opts))
	replica := startOne(t, ports[1], dataNodeOpts(opts, "replicaof 127.0.0.1 "+strconv.Itoa(master.Port())))
	g.data = []*Server{master, replica}
	// Sentinels learn the replicas from the master's INFO, which they ask
	// for at once and then every 10 s: start them once the replica is in.
	waitUntil(t, "replica in sync", func() error { return inSync(master, replica) })

	g.sentinels = make([]*Server, sentinelCount)
	conf, err := sentinelConf(master.Port())
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	for i := range g.sentinels {
		g.sentinels[i] = newServer(t, []Option{func(c *config) { c.sentinel = true }, withConf(conf)})
	}
	errs := make([]error, sentinelCount)
	var wg sync.WaitGroup
	for i, s := range g.sentinels {
		wg.Go(func() { errs[i] = s.boot(ports[2+i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("redistest: starting sentinels: %v", err)
	}
	waitUntil(t, "sentinels agree on master and replica", func() error { return g.settled(master, replica) })
	return g
}

// dataNodeOpts returns the options of a data node: the rig's config lines,
// then the test's options (whose WithArgs override them).
func dataNodeOpts(opts []Option, conf ...string) []Option {
	return append([]Option{withConf(append([]string{dataNodeConf}, conf...)...)}, opts...)
}

// sentinelConf is the config file of a sentinel monitoring the master on
// port.
func sentinelConf(port int) (string, error) {
	var b strings.Builder
	err := sentinelConfTmpl.Execute(&b, struct {
		Name string
		Port int
	}{SentinelMasterName, port})
	return b.String(), err
}

// SentinelAddrs returns the addresses of the three sentinels.
func (g *SentinelGroup) SentinelAddrs() []string {
	addrs := make([]string, len(g.sentinels))
	for i, s := range g.sentinels {
		addrs[i] = s.Addr()
	}
	return addrs
}

// Sentinels returns the three sentinel processes (to kill, pause or restart
// one of them).
func (g *SentinelGroup) Sentinels() []*Server {
	return slices.Clone(g.sentinels)
}

// DataNodes returns the two data nodes in the order they were started (the
// first was the first master), whatever their roles are now.
func (g *SentinelGroup) DataNodes() []*Server {
	return slices.Clone(g.data)
}

// Master returns the data node that the sentinels name as the master
// (SENTINEL GET-MASTER-ADDR-BY-NAME, asking the sentinels in turn until one
// answers), or nil if no sentinel answers or none names a data node.
func (g *SentinelGroup) Master() *Server {
	for _, s := range g.sentinels {
		if !s.reachable() {
			continue
		}
		addr, err := g.masterAddr(s)
		if err != nil {
			continue
		}
		return g.node(addr)
	}
	return nil
}

// Replica returns the data node that is not the Master (the group has one
// replica), or nil if Master does.
func (g *SentinelGroup) Replica() *Server {
	m := g.Master()
	if m == nil {
		return nil
	}
	for _, s := range g.data {
		if s != m {
			return s
		}
	}
	return nil
}

// FailoverOptions returns the options of a go-redis failover client for the
// group: MasterName and SentinelAddrs, everything else at go-redis' defaults,
// as a user's client would have them.
func (g *SentinelGroup) FailoverOptions() *redis.FailoverOptions {
	return &redis.FailoverOptions{MasterName: SentinelMasterName, SentinelAddrs: g.SentinelAddrs()}
}

// Client returns redis.NewFailoverClient(g.FailoverOptions()), closed in
// t.Cleanup (which also waits out go-redis' background re-dialling, see
// NewClient).
func (g *SentinelGroup) Client(t testing.TB) *redis.Client {
	opt := g.FailoverOptions()
	tr := &dialTracker{dial: (&net.Dialer{}).DialContext}
	opt.Dialer = tr.Dial
	c := redis.NewFailoverClient(opt)
	poolSize := c.Options().PoolSize
	t.Cleanup(func() {
		_ = c.Close()
		tr.settle(poolSize)
	})
	return c
}

// Failover runs SENTINEL FAILOVER (retrying while a sentinel answers that it
// cannot start one yet; first, if both data nodes run, it waits as
// WaitSettled does, so that the replica has every write) and returns the new master once the group has settled
// again: the new master accepts writes (ROLE master, a SET and DEL of the key
// "redistest:probe" work), every running sentinel names it and knows the old
// master as its replica, and the old master replicates it and is in sync. A
// sentinel turns the old master into a replica only about 10 s after the
// failover; to be quick, the rig sends it the same REPLICAOF itself. If the
// old master is not running (or paused), Failover returns once the new master
// accepts writes and every running sentinel names it. Failover fails the
// test after about 20 s per step.
func (g *SentinelGroup) Failover(t testing.TB) *Server {
	t.Helper()
	old := g.mustMaster(t)
	if replica := g.Replica(); old.reachable() && replica.reachable() {
		// Clean means no write is lost: the replica must have them all.
		waitUntil(t, "group settled before the failover", func() error { return g.settled(old, replica) })
	}
	waitUntil(t, "SENTINEL FAILOVER", func() error {
		var errs []error
		for _, s := range g.sentinels {
			if !s.reachable() {
				continue
			}
			_, err := command(s.Addr(), "SENTINEL", "FAILOVER", SentinelMasterName)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
		return fmt.Errorf("no sentinel starts the failover: %w", errors.Join(errs...))
	})
	promoted := g.awaitPromotion(t, old)
	if !old.reachable() {
		return promoted // killed or paused by the test: nothing to settle
	}
	// What a sentinel does about 10 s later (+convert-to-slave).
	waitUntil(t, "old master becomes a replica", func() error { return replicaOf(old, promoted) })
	waitUntil(t, "group settles after the failover", func() error { return g.settled(promoted, old) })
	return promoted
}

// awaitPromotion waits until every running sentinel names another master
// than old and that master accepts writes, and returns it.
func (g *SentinelGroup) awaitPromotion(t testing.TB, old *Server) *Server {
	t.Helper()
	var promoted *Server
	waitUntil(t, "sentinels promote the replica", func() error {
		for _, s := range g.sentinels {
			if !s.reachable() {
				continue
			}
			addr, err := g.masterAddr(s)
			if err != nil {
				return err
			}
			if addr == old.Addr() {
				return fmt.Errorf("sentinel %s still names %s", s.Addr(), addr)
			}
			if promoted == nil {
				promoted = g.node(addr)
			}
			if promoted == nil || promoted.Addr() != addr {
				return fmt.Errorf("sentinel %s names %s, another names %v", s.Addr(), addr, promoted)
			}
		}
		if promoted == nil {
			return errors.New("no sentinel is running")
		}
		return acceptsWrites(promoted.Addr(), "redistest:probe")
	})
	return promoted
}

// FailoverLagging promotes a replica that missed writes. It pauses the
// replica (SIGSTOP) and has the master drop its connection to it, then calls
// writes with a plain client (Server.Client) on the master: the replica will
// never see these writes. (Dropping the connection is needed: the kernel
// still receives data for a stopped process, so the writes would otherwise
// sit in the replica's socket buffer and be applied on resume.) It then kills
// the master (SIGKILL), resumes the replica and waits until the sentinels
// promoted it and it accepts writes. Last it restarts the old master's
// process, empty (no persistence), as a replica of the new master, and waits
// until it is in sync and the sentinels know it. It returns the new master
// and fails the test after about 20 s per step.
func (g *SentinelGroup) FailoverLagging(t testing.TB, writes func(master *redis.Client)) *Server {
	t.Helper()
	old := g.mustMaster(t)
	replica := g.Replica()
	waitUntil(t, "replica in sync before the failover", func() error { return inSync(old, replica) })
	replica.Pause(t)
	if _, err := command(old.Addr(), "CLIENT", "KILL", "TYPE", "replica"); err != nil {
		t.Fatalf("redistest: FailoverLagging: %v", err)
	}
	writes(old.Client(t))
	old.Kill(t)
	replica.Resume(t)
	promoted := g.awaitPromotion(t, old)
	if promoted != replica {
		t.Fatalf("redistest: FailoverLagging: %s promoted, want the replica %s", promoted.Addr(), replica.Addr())
	}
	old.restartReplicaOf(t, promoted)
	waitUntil(t, "old master rejoins as a replica", func() error { return g.settled(promoted, old) })
	return promoted
}

// WaitSettled waits until the group is as StartSentinel leaves it: the
// replica is in sync with the master, and every running sentinel names the
// master, knows the replica and sees the other running sentinels. Use it
// after restarting a data node or a sentinel. Both data nodes must be
// running. It fails the test after about 20 s.
func (g *SentinelGroup) WaitSettled(t testing.TB) {
	t.Helper()
	waitUntil(t, "group settles", func() error {
		m := g.Master()
		if m == nil {
			return errors.New("no sentinel names a master of the group")
		}
		return g.settled(m, g.Replica())
	})
}

// mustMaster returns Master or fails the test.
func (g *SentinelGroup) mustMaster(t testing.TB) *Server {
	t.Helper()
	m := g.Master()
	if m == nil {
		t.Fatal("redistest: no sentinel names a master of the group")
	}
	return m
}

// masterAddr asks sentinel s for the master's address.
func (g *SentinelGroup) masterAddr(s *Server) (string, error) {
	reply, err := command(s.Addr(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMasterName)
	if err != nil {
		return "", err
	}
	hp, ok := reply.([]any)
	if !ok || len(hp) != 2 {
		return "", fmt.Errorf("sentinel %s: GET-MASTER-ADDR-BY-NAME answered %v", s.Addr(), reply)
	}
	host, _ := hp[0].(string)
	port, _ := hp[1].(string)
	return net.JoinHostPort(host, port), nil
}

// node returns the data node listening on addr, or nil.
func (g *SentinelGroup) node(addr string) *Server {
	for _, s := range g.data {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// settled reports (as nil) whether replica is in sync with master and every
// running sentinel names master, sees replica as its healthy replica and
// sees every other running sentinel.
func (g *SentinelGroup) settled(master, replica *Server) error {
	if err := inSync(master, replica); err != nil {
		return err
	}
	running := 0
	for _, s := range g.sentinels {
		if s.reachable() {
			running++
		}
	}
	for _, s := range g.sentinels {
		if !s.reachable() {
			continue
		}
		addr, err := g.masterAddr(s)
		if err != nil {
			return err
		}
		if addr != master.Addr() {
			return fmt.Errorf("sentinel %s names master %s, want %s", s.Addr(), addr, master.Addr())
		}
		reply, err := command(s.Addr(), "SENTINEL", "REPLICAS", SentinelMasterName)
		if err != nil {
			return err
		}
		if err := healthy(reply, replica.Addr()); err != nil {
			return fmt.Errorf("sentinel %s: %w", s.Addr(), err)
		}
		reply, err = command(s.Addr(), "SENTINEL", "SENTINELS", SentinelMasterName)
		if err != nil {
			return err
		}
		if n := countUp(reply); n != running-1 {
			return fmt.Errorf("sentinel %s sees %d other sentinels up, want %d", s.Addr(), n, running-1)
		}
	}
	return nil
}

// healthy checks that a SENTINEL REPLICAS reply lists addr as a reachable
// replica (see up). The other fields (the replica's link to its master, ...)
// come from the replica's INFO, which a sentinel asks for only every 10 s:
// inSync checks them on the replica itself.
func healthy(reply any, addr string) error {
	items, _ := reply.([]any)
	for _, item := range items {
		f := fieldMap(item)
		if net.JoinHostPort(f["ip"], f["port"]) != addr {
			continue
		}
		if !up(f["flags"], "slave") {
			return fmt.Errorf("%s has flags %q", addr, f["flags"])
		}
		return nil
	}
	return fmt.Errorf("%s not listed", addr)
}

// countUp counts the entries of a SENTINEL SENTINELS reply that are up.
func countUp(reply any) int {
	items, _ := reply.([]any)
	n := 0
	for _, item := range items {
		if up(fieldMap(item)["flags"], "sentinel") {
			n++
		}
	}
	return n
}

// up reports whether flags (as SENTINEL REPLICAS and SENTINELS show them)
// name an instance of kind that answers: not s_down, o_down or
// disconnected. Other flags are fine: master_down on a sentinel is its last
// opinion about a master that was down, forgotten only 5 s later.
func up(flags, kind string) bool {
	f := strings.Split(flags, ",")
	return slices.Contains(f, kind) && !slices.Contains(f, "s_down") && !slices.Contains(f, "o_down") && !slices.Contains(f, "disconnected")
}

// inSync reports (as nil) whether replica replicates master with its link up
// and master lists it as an online replica.
func inSync(master, replica *Server) error {
	ri, err := info(replica.Addr(), "replication")
	if err != nil {
		return err
	}
	if ri["role"] != "slave" || ri["master_port"] != strconv.Itoa(master.Port()) {
		return fmt.Errorf("%s has role %s of master port %s, want a replica of %s", replica.Addr(), ri["role"], ri["master_port"], master.Addr())
	}
	if ri["master_link_status"] != "up" {
		return fmt.Errorf("replica %s: master_link_status %s", replica.Addr(), ri["master_link_status"])
	}
	mi, err := info(master.Addr(), "replication")
	if err != nil {
		return err
	}
	for k, v := range mi {
		if strings.HasPrefix(k, "slave") && strings.Contains(v, ",port="+strconv.Itoa(replica.Port())+",") {
			if !strings.Contains(v, ",state=online,") {
				return fmt.Errorf("master %s lists %s as %s", master.Addr(), replica.Addr(), v)
			}
			return nil
		}
	}
	return fmt.Errorf("master %s does not list replica %s", master.Addr(), replica.Addr())
}

// replicaOf makes s a replica of master (REPLICAOF, recorded in its config
// file with CONFIG REWRITE as a sentinel does) unless it already is one.
func replicaOf(s, master *Server) error {
	si, err := info(s.Addr(), "replication")
	if err != nil {
		return err
	}
	if si["role"] == "slave" && si["master_port"] == strconv.Itoa(master.Port()) {
		return nil
	}
	if _, err := command(s.Addr(), "REPLICAOF", "127.0.0.1", strconv.Itoa(master.Port())); err != nil {
		return err
	}
	if _, err := command(s.Addr(), "CONFIG", "REWRITE"); err != nil {
		return err
	}
	return errors.New("REPLICAOF sent")
}

// acceptsWrites reports (as nil) whether addr is a master that takes a SET
// (and DEL) of key.
func acceptsWrites(addr, key string) error {
	role, err := command(addr, "ROLE")
	if err != nil {
		return err
	}
	if r, _ := role.([]any); len(r) == 0 || r[0] != "master" {
		return fmt.Errorf("%s: ROLE %v", addr, role)
	}
	if _, err := command(addr, "SET", key, "1"); err != nil {
		return err
	}
	_, err = command(addr, "DEL", key)
	return err
}

// restartReplicaOf restarts s (empty) as a replica of master: the REPLICAOF
// goes into its config file, so that it replicates from its first moment on
// and a later Restart keeps it.
func (s *Server) restartReplicaOf(t testing.TB, master *Server) {
	t.Helper()
	if err := s.appendConf("replicaof 127.0.0.1 " + strconv.Itoa(master.Port())); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s.Restart(t)
}
