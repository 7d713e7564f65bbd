package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// clusterMasters and clusterReplicas: three masters with one replica
	// each.
	clusterMasters  = 3
	clusterReplicas = 1
	// clusterSlots is the number of hash slots of Redis Cluster.
	clusterSlots = 16384
	// manualFailoverTimeout is a bit more than the time after which a
	// replica gives up a CLUSTER FAILOVER that did not complete (5 s).
	manualFailoverTimeout = 6 * time.Second
	// createTimeout bounds redis-cli --cluster create.
	createTimeout = 30 * time.Second
)

// Cluster is a Redis Cluster owned by a test: three masters and three
// replicas (one each), redis-server processes on free loopback ports whose
// cluster bus ports (port+10000) were free too, created with `redis-cli
// --cluster create ... --cluster-replicas 1 --cluster-yes`. The nodes run
// with cluster-node-timeout 2000 (ms) and cluster-replica-validity-factor 0
// (a replica that lost its master long ago may still be promoted), and keep
// their nodes.conf across Server.Restart, so a restarted node rejoins the
// cluster (empty: there is no persistence).
//
// Which node is a master changes with failovers: ask Masters, MasterOf and
// ReplicaOf each time. Every process is killed when the test ends. The
// methods are safe for concurrent use, but the failovers are not meant to
// overlap.
type Cluster struct {
	nodes []*Server // in start order; the first three were the first masters
}

// StartCluster starts a Cluster. The options (WithNotify, WithArgs, ...)
// apply to every node. It returns once every running node reports
// cluster_state:ok, knows every other node as healthy and agrees on which
// master serves each of the 16384 slots, and every replica is in sync with
// its master. It fails the test if that takes longer than 20 s, and calls
// Require first (which also covers a missing redis-cli).
func StartCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	Require(t)
	requireCLI(t)
	n := clusterMasters * (1 + clusterReplicas)
	ports, err := freePorts(n, true)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	nodeOpts := append([]Option{WithCluster(), withConf(dataNodeConf, clusterNodeConf)}, opts...)
	c := &Cluster{nodes: make([]*Server, n)}
	for i := range c.nodes {
		c.nodes[i] = newServer(t, nodeOpts)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range c.nodes {
		wg.Go(func() { errs[i] = s.boot(ports[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("redistest: starting cluster nodes: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(clusterReplicas), "--cluster-yes")
	cmd := exec.CommandContext(ctx, cliBinary(), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	c.WaitSettled(t)
	return c
}

// cliBinary returns the path of redis-cli found in $PATH (or "" if absent).
func cliBinary() string { return lookPath("redis-cli") }

// requireCLI is Require for redis-cli, which the Cluster rig needs too.
func requireCLI(t testing.TB) {
	t.Helper()
	requireProgram(t, "redis-cli")
}

// Addrs returns the addresses of the six nodes, in the order they were
// started (the first three were the first masters).
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		addrs[i] = s.Addr()
	}
	return addrs
}

// Nodes returns the six nodes in the order they were started, whatever their
// roles are now.
func (c *Cluster) Nodes() []*Server {
	return slices.Clone(c.nodes)
}

// Masters returns the nodes that serve slots now, in the order of their
// first slot, as the first running node sees it (CLUSTER NODES); a node that
// is seen as failed is left out.
func (c *Cluster) Masters() []*Server {
	view, _ := c.view()
	var masters []*Server
	for _, n := range view.masters() {
		if s := c.node(n.addr); s != nil {
			masters = append(masters, s)
		}
	}
	return masters
}

// Replicas returns the nodes that are replicas now, as the first running
// node sees it (CLUSTER NODES); a node that is seen as failed is left out.
func (c *Cluster) Replicas() []*Server {
	view, _ := c.view()
	var replicas []*Server
	for _, n := range view {
		if n.has("slave") && !n.failed() {
			if s := c.node(n.addr); s != nil {
				replicas = append(replicas, s)
			}
		}
	}
	return replicas
}

// MasterOf returns the node that serves key's hash slot now, as the first
// running node sees it, or nil if none does.
func (c *Cluster) MasterOf(key string) *Server {
	view, _ := c.view()
	if m := view.serving(keySlot(key)); m != nil {
		return c.node(m.addr)
	}
	return nil
}

// ReplicaOf returns a replica (the first listed) of the node that serves
// key's hash slot now, as the first running node sees it, or nil if there is
// none.
func (c *Cluster) ReplicaOf(key string) *Server {
	view, _ := c.view()
	if r := view.replicaOf(view.serving(keySlot(key))); r != nil {
		return c.node(r.addr)
	}
	return nil
}

// ClusterOptions returns the options of a go-redis cluster client for the
// cluster: Addrs (all six nodes), everything else at go-redis' defaults, as a
// user's client would have them.
func (c *Cluster) ClusterOptions() *redis.ClusterOptions {
	return &redis.ClusterOptions{Addrs: c.Addrs()}
}

// Client returns redis.NewClusterClient(c.ClusterOptions()), closed in
// t.Cleanup (which also waits out go-redis' background re-dialling, see
// NewClient).
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	opt := c.ClusterOptions()
	tr := &dialTracker{dial: (&net.Dialer{}).DialContext}
	opt.Dialer = tr.Dial
	cc := redis.NewClusterClient(opt)
	poolSize := cc.Options().PoolSize
	t.Cleanup(func() {
		_ = cc.Close()
		tr.settle(poolSize)
	})
	return cc
}

// Failover runs CLUSTER FAILOVER on the replica of the master of key's slot
// (CLUSTER FAILOVER FORCE when that master is not running or paused) and
// returns that replica, the new master, once every running node agrees that
// it serves the slot and it accepts writes for the slot (a SET and DEL of a
// "redistest:probe:N" key of the same slot). It then also waits until the
// cluster has settled again as StartCluster does (the old master, if it
// runs, is now an in-sync replica of the new one). It fails the test after
// about 20 s per step.
//
// After the FORCE failover of a dead master, a go-redis ClusterClient made
// with default options keeps sending the slot's commands to the dead node
// (failing with "connection refused") until it reloads its slot map: go-redis
// v9.22 does that on a MOVED or READONLY reply, which a dead node never
// sends, or when its map is older than ClusterStateReloadInterval (60 s by
// default). After a clean failover the old master answers MOVED, and the
// client follows at once.
func (c *Cluster) Failover(t testing.TB, key string) *Server {
	t.Helper()
	slot := keySlot(key)
	old, replica := c.MasterOf(key), c.ReplicaOf(key)
	if old == nil || replica == nil {
		t.Fatalf("redistest: Failover: slot %d of %q has master %v and replica %v", slot, key, old, replica)
	}
	args := []string{"CLUSTER", "FAILOVER"}
	if !old.reachable() {
		args = append(args, "FORCE")
	} else if replica.reachable() {
		waitUntil(t, "replica in sync before the failover", func() error { return inSync(old, replica) })
	}
	probe := probeKey(slot)
	var sent time.Time
	waitUntil(t, "replica takes over the slot", func() error {
		// A manual failover that did not complete is abandoned after 5 s
		// (CLUSTER_MF_TIMEOUT): ask again.
		if time.Since(sent) > manualFailoverTimeout {
			if _, err := command(replica.Addr(), args...); err != nil {
				return err
			}
			sent = time.Now()
		}
		for _, s := range c.nodes {
			if !s.reachable() {
				continue
			}
			view, err := nodesOf(s.Addr())
			if err != nil {
				return err
			}
			if m := view.serving(slot); m == nil || m.addr != replica.Addr() {
				return fmt.Errorf("%s sees slot %d served by %v, want %s", s.Addr(), slot, m, replica.Addr())
			}
		}
		if _, err := command(replica.Addr(), "SET", probe, "1"); err != nil {
			return err
		}
		_, err := command(replica.Addr(), "DEL", probe)
		return err
	})
	waitUntil(t, "cluster settles after the failover", c.settled)
	return replica
}

// WaitSettled waits until the cluster is as StartCluster leaves it, among
// the running nodes: each reports cluster_state:ok, sees the others as
// healthy and has the same view of the cluster, all slots are served, and
// each running replica is in sync with its master. Use it after restarting a
// node (which rejoins with its nodes.conf). It fails the test after about
// 20 s.
func (c *Cluster) WaitSettled(t testing.TB) {
	t.Helper()
	waitUntil(t, "cluster settles", c.settled)
}

// settled reports (as nil) whether every running node reports
// cluster_state:ok, sees every other running node as healthy (not failing,
// not in handshake, its cluster bus link up) and has the same view of the cluster (who is a master,
// serving which slots, and who replicates whom), all slots are served, and
// every running replica is in sync with its master.
func (c *Cluster) settled() error {
	var first clusterView
	var firstAddr string
	for _, s := range c.nodes {
		if !s.reachable() {
			continue
		}
		ci, err := clusterInfo(s.Addr())
		if err != nil {
			return err
		}
		if ci["cluster_state"] != "ok" {
			return fmt.Errorf("%s: cluster_state %s", s.Addr(), ci["cluster_state"])
		}
		view, err := nodesOf(s.Addr())
		if err != nil {
			return err
		}
		for _, o := range c.nodes {
			if !o.reachable() {
				continue
			}
			n := view.byAddr(o.Addr())
			if n == nil {
				return fmt.Errorf("%s does not know %s", s.Addr(), o.Addr())
			}
			if n.failed() || n.has("handshake") || n.has("noaddr") || !n.linked {
				return fmt.Errorf("%s sees %s with flags %v, linked %v", s.Addr(), o.Addr(), n.flags, n.linked)
			}
		}
		if first == nil {
			first, firstAddr = view, s.Addr()
			if err := first.covers(); err != nil {
				return fmt.Errorf("%s: %w", s.Addr(), err)
			}
			continue
		}
		if a, b := first.topology(), view.topology(); a != b {
			return fmt.Errorf("%s and %s disagree on the cluster:\n%s\n%s", firstAddr, s.Addr(), a, b)
		}
	}
	if first == nil {
		return errors.New("no node is running")
	}
	for _, n := range first {
		if !n.has("slave") {
			continue
		}
		r, m := c.node(n.addr), first.byID(n.master)
		if r == nil || !r.reachable() {
			continue
		}
		if m == nil || c.node(m.addr) == nil {
			return fmt.Errorf("replica %s has an unknown master %s", n.addr, n.master)
		}
		if err := inSync(c.node(m.addr), r); err != nil {
			return err
		}
	}
	return nil
}

// view returns CLUSTER NODES as the first running node sees it.
func (c *Cluster) view() (clusterView, error) {
	var errs []error
	for _, s := range c.nodes {
		if !s.reachable() {
			continue
		}
		v, err := nodesOf(s.Addr())
		if err == nil {
			return v, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no node answers CLUSTER NODES: %w", errors.Join(errs...))
}

// node returns the node listening on addr, or nil.
func (c *Cluster) node(addr string) *Server {
	for _, s := range c.nodes {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr string
	flags    []string
	linked   bool     // link-state connected: the cluster bus link is up
	master   string   // the master's id for a replica, "-" otherwise
	slots    [][2]int // ranges of slots served, both ends included
}

func (n *clusterNode) has(flag string) bool { return slices.Contains(n.flags, flag) }

// failed reports whether the node is seen as failing (fail, or fail? for the
// node's own suspicion).
func (n *clusterNode) failed() bool { return n.has("fail") || n.has("fail?") }

func (n *clusterNode) String() string { return n.addr }

// clusterView is a node's CLUSTER NODES.
type clusterView []*clusterNode

// nodesOf runs CLUSTER NODES on addr.
func nodesOf(addr string) (clusterView, error) {
	text, err := commandString(addr, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	var view clusterView
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("%s: CLUSTER NODES line %q", addr, line)
		}
		n := &clusterNode{id: f[0], flags: strings.Split(f[2], ","), master: f[3], linked: f[7] == "connected"}
		n.addr, _, _ = strings.Cut(f[1], "@")
		n.flags = slices.DeleteFunc(n.flags, func(s string) bool { return s == "myself" })
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") { // a slot being migrated
				continue
			}
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("%s: CLUSTER NODES slots %q", addr, r)
			}
			n.slots = append(n.slots, [2]int{a, b})
		}
		view = append(view, n)
	}
	return view, nil
}

// clusterInfo runs CLUSTER INFO on addr.
func clusterInfo(addr string) (map[string]string, error) {
	text, err := commandString(addr, "CLUSTER", "INFO")
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for _, line := range strings.Split(text, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = v
		}
	}
	return fields, nil
}

// masters returns the healthy nodes serving slots, ordered by first slot.
func (v clusterView) masters() []*clusterNode {
	var ms []*clusterNode
	for _, n := range v {
		if n.has("master") && !n.failed() && len(n.slots) > 0 {
			ms = append(ms, n)
		}
	}
	slices.SortFunc(ms, func(a, b *clusterNode) int { return a.slots[0][0] - b.slots[0][0] })
	return ms
}

// serving returns the node that serves slot, or nil.
func (v clusterView) serving(slot int) *clusterNode {
	for _, n := range v {
		for _, r := range n.slots {
			if r[0] <= slot && slot <= r[1] {
				return n
			}
		}
	}
	return nil
}

// replicaOf returns the first healthy replica of m, or nil.
func (v clusterView) replicaOf(m *clusterNode) *clusterNode {
	if m == nil {
		return nil
	}
	for _, n := range v {
		if n.has("slave") && n.master == m.id && !n.failed() {
			return n
		}
	}
	return nil
}

func (v clusterView) byAddr(addr string) *clusterNode {
	for _, n := range v {
		if n.addr == addr {
			return n
		}
	}
	return nil
}

func (v clusterView) byID(id string) *clusterNode {
	for _, n := range v {
		if n.id == id {
			return n
		}
	}
	return nil
}

// topology renders each node's role, its master (for a replica) and the
// slots it serves, to compare views.
func (v clusterView) topology() string {
	var lines []string
	for _, n := range v {
		role := "master"
		if n.has("slave") {
			role = "replica of "
			if m := v.byID(n.master); m != nil {
				role += m.addr
			}
		}
		line := n.addr + " " + role
		for _, r := range n.slots {
			line += fmt.Sprintf(" %d-%d", r[0], r[1])
		}
		lines = append(lines, line)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// covers reports (as nil) whether every slot is served by a healthy master.
func (v clusterView) covers() error {
	served := 0
	for _, n := range v.masters() {
		for _, r := range n.slots {
			served += r[1] - r[0] + 1
		}
	}
	if served != clusterSlots {
		return fmt.Errorf("%d of %d slots served", served, clusterSlots)
	}
	return nil
}

// keySlot returns the hash slot of key: CRC16 (XMODEM) of the key, or of its
// hash tag (the part between the first "{" and the next "}", if not empty),
// modulo 16384.
func keySlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % clusterSlots
}

// probeKey returns a key "redistest:probe:N" in slot, for the rig's own
// writes.
func probeKey(slot int) string {
	for i := 0; ; i++ {
		if k := "redistest:probe:" + strconv.Itoa(i); keySlot(k) == slot {
			return k
		}
	}
}
