package redistest

import (
	"net"
	"sync"
)

// bufferedConn is the client's end of an in-memory pipe whose writes never block: they are queued and written
// to the pipe, in order, by a goroutine that runs only while the queue is not empty (so an idle connection keeps
// no goroutine alive: a synctest bubble can end with a connection nobody closed, as a crashed client leaves it).
//
// A net.Pipe is unbuffered: a write returns only once the other side has read it. On a pub/sub connection that
// can deadlock with go-redis: a SUBSCRIBE written while holding the PubSub's lock waits for miniredis to read it,
// while miniredis waits for its push of a message to be read, which the receiving goroutine can only do once it
// gets that lock. A real socket has kernel buffers, so queueing the writes gives the tests a server that behaves
// like one over TCP.
type bufferedConn struct {
	net.Conn

	mu      sync.Mutex
	queue   [][]byte
	pumping bool  // a goroutine is writing the queue to the pipe
	err     error // the pipe's write error, reported by later writes
}

func newBufferedConn(c net.Conn) *bufferedConn { return &bufferedConn{Conn: c} }

// Write queues p and returns at once; an error of an earlier write to the pipe is returned instead.
func (b *bufferedConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	b.queue = append(b.queue, append([]byte(nil), p...))
	if !b.pumping {
		b.pumping = true
		go b.pump()
	}
	return len(p), nil
}

// pump writes the queued buffers to the pipe, in order, and returns when the queue is empty or a write failed
// (the connection was closed, at either end).
func (b *bufferedConn) pump() {
	for {
		b.mu.Lock()
		if len(b.queue) == 0 || b.err != nil {
			b.pumping = false
			b.mu.Unlock()
			return
		}
		p := b.queue[0]
		b.queue = b.queue[1:]
		b.mu.Unlock()
		if _, err := b.Conn.Write(p); err != nil {
			b.mu.Lock()
			b.err = err
			b.queue = nil
			b.mu.Unlock()
		}
	}
}
