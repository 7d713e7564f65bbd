package keyward

import "errors"

// ErrQuorum means an operation on a quorum lock (redlock) did not get a majority of its nodes to agree in time:
// too few nodes answered, some refused, or the majority took so long that no validity was left. The error
// returned carries each node's cause (joined with errors.Join), so errors.Is also finds, say, ErrWrongType when a
// node refused with WRONGTYPE. A lock taken by another holder on a majority is ErrNotObtained instead, and a
// caller's context that ended is reported as the context's error.
var ErrQuorum = errors.New("keyward: no quorum: a majority of nodes did not agree")
