package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Sentinel and Cluster rigs talk to their servers with the few lines
// below rather than with go-redis clients: one connection per command, closed
// at once, so that polling dead or paused servers leaves no pool, no
// background dialling and no goroutine behind.

const (
	// commandTimeout bounds one command of the rig (dial, write, read).
	commandTimeout = time.Second
	// pollInterval is how long the rig waits between two checks of a
	// condition it waits for.
	pollInterval = 20 * time.Millisecond
	// rigTimeout bounds every wait of the Sentinel and Cluster rigs.
	rigTimeout = 20 * time.Second
)

// replyError is an error reply of a server ("-ERR ...").
type replyError string

func (e replyError) Error() string { return string(e) }

// command sends one command to addr on a new connection and returns its
// reply: a string (simple or bulk), an int64, nil, a []any, or a replyError
// as the error.
func command(addr string, args ...string) (any, error) {
	c, err := net.DialTimeout("tcp", addr, commandTimeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return nil, err
	}
	reply, err := readReply(bufio.NewReader(c))
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", strings.Join(args, " "), addr, err)
	}
	return reply, nil
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, replyError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		items := make([]any, n)
		for i := range items {
			// An error inside an array (EXEC) is kept as a value.
			if items[i], err = readReply(r); err != nil {
				var re replyError
				if !errors.As(err, &re) {
					return nil, err
				}
				items[i] = re
			}
		}
		return items, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}

// commandString runs a command whose reply is a string.
func commandString(addr string, args ...string) (string, error) {
	reply, err := command(addr, args...)
	if err != nil {
		return "", err
	}
	s, ok := reply.(string)
	if !ok {
		return "", fmt.Errorf("%s on %s: reply %v is not a string", strings.Join(args, " "), addr, reply)
	}
	return s, nil
}

// info runs INFO section and returns its fields.
func info(addr, section string) (map[string]string, error) {
	text, err := commandString(addr, "INFO", section)
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for _, line := range strings.Split(text, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(k, "#") {
			fields[k] = v
		}
	}
	return fields, nil
}

// fieldMap turns a flat [name, value, name, value, ...] reply (SENTINEL
// REPLICAS and the like) into a map.
func fieldMap(reply any) map[string]string {
	items, _ := reply.([]any)
	m := map[string]string{}
	for i := 0; i+1 < len(items); i += 2 {
		k, _ := items[i].(string)
		v, _ := items[i+1].(string)
		m[k] = v
	}
	return m
}

// waitUntil checks cond every pollInterval until it returns nil and fails the
// test with cond's last error if that takes longer than rigTimeout. The rig
// polls because the servers offer nothing to wait on for these conditions.
func waitUntil(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(rigTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: %s: still not the case after %v: %v", what, rigTimeout, err)
		}
		time.Sleep(pollInterval)
	}
}
