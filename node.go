package keyward

import "fmt"

// A NodeError is one node's part in a failed quorum operation (redlock): which node, and what it answered. A
// quorum failure (ErrQuorum) carries one per node that failed, so that errors.As finds them and errors.Is finds
// their causes:
//
//	var ne *keyward.NodeError
//	if errors.As(err, &ne) { log.Printf("node %d (%s): %v", ne.Node, ne.Addr, ne.Err) }
type NodeError struct {
	// Node is the node's index in the list of clients the lock client was built with.
	Node int
	// Addr is the node's address as its client reports it ("" when the client does not say).
	Addr string
	// Err is what the node answered, or why it did not.
	Err error
}

// Error returns "node <Node> (<Addr>): <Err>".
func (e *NodeError) Error() string {
	if e.Addr == "" {
		return fmt.Sprintf("node %d: %v", e.Node, e.Err)
	}
	return fmt.Sprintf("node %d (%s): %v", e.Node, e.Addr, e.Err)
}

// Unwrap returns Err.
func (e *NodeError) Unwrap() error { return e.Err }
