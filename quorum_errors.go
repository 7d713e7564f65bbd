package keyward

import "errors"

// ErrQuorum means an operation on a quorum lock (redlock) did not get a majority of its nodes to agree in time:
// too few nodes answered, some refused, or the majority took so long that no validity was left. The error
// returned carries a *NodeError for each node that failed — its index, its address and its cause — so that
// errors.As finds them and errors.Is also finds, say, ErrWrongType or ErrNoPermission when nodes refused:
//
//	var ne *keyward.NodeError
//	if errors.As(err, &ne) { log.Printf("node %d (%s): %v", ne.Node, ne.Addr, ne.Err) }
//
// (errors.As finds the first; the error's Unwrap() []error returns ErrQuorum and every NodeError.) A lock taken by
// another holder on a majority is ErrNotObtained instead, and a caller's context that ended is reported as the
// context's error.
var ErrQuorum = errors.New("keyward: no quorum: a majority of nodes did not agree")
