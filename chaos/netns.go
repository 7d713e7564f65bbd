package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Netns is a network namespace joined to the host by a veth pair, in which worker processes can run and be cut
// off from a server by iptables rules inside the namespace: a real partition, packets dropped, nothing closed.
// It needs root, the ip command and iptables; NewNetns fails without them.
type Netns struct {
	// Name is the namespace's name.
	Name string
	// HostIP is the host end's address (servers bind it), NSIP the namespace end's.
	HostIP, NSIP string
	hostDev      string
}

// NewNetns creates a namespace and veth pair named after this process (so that concurrent test binaries do
// not collide), with link-local addresses on a /30 of their own, and checks that iptables works inside it.
func NewNetns() (n *Netns, err error) {
	for _, bin := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found: %w", bin, err)
		}
	}
	pid := os.Getpid()
	sub := 1 + (pid/64)%253
	base := (pid % 64) * 4
	n = &Netns{
		Name:    "kwchaos" + strconv.Itoa(pid),
		HostIP:  fmt.Sprintf("169.254.%d.%d", sub, base+1),
		NSIP:    fmt.Sprintf("169.254.%d.%d", sub, base+2),
		hostDev: "kwh" + strconv.Itoa(pid),
	}
	peer := "kwn" + strconv.Itoa(pid)
	if err := run("ip", "netns", "add", n.Name); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
			n = nil
		}
	}()
	steps := [][]string{
		{"ip", "link", "add", n.hostDev, "type", "veth", "peer", "name", peer},
		{"ip", "link", "set", peer, "netns", n.Name},
		{"ip", "addr", "add", n.HostIP + "/30", "dev", n.hostDev},
		{"ip", "link", "set", n.hostDev, "up"},
		{"ip", "netns", "exec", n.Name, "ip", "addr", "add", n.NSIP + "/30", "dev", peer},
		{"ip", "netns", "exec", n.Name, "ip", "link", "set", peer, "up"},
		{"ip", "netns", "exec", n.Name, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", n.Name, "iptables", "-L", "OUTPUT", "-n"},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// Close deletes the namespace (which deletes the veth pair).
func (n *Netns) Close() error {
	err := run("ip", "netns", "del", n.Name)
	_ = exec.Command("ip", "link", "del", n.hostDev).Run() // gone with the namespace, normally
	return err
}

// Command returns a command that runs name inside the namespace (ip netns exec execs it: same pid).
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Cut drops every packet from the namespace to the host's port.
func (n *Netns) Cut(port int) error { return n.iptables("-A", port) }

// Heal removes the rule Cut added.
func (n *Netns) Heal(port int) error { return n.iptables("-D", port) }

func (n *Netns) iptables(op string, port int) error {
	return run("ip", "netns", "exec", n.Name, "iptables", op, "OUTPUT", "-p", "tcp", "-d", n.HostIP,
		"--dport", strconv.Itoa(port), "-j", "DROP")
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
