package datasync

import (
	"strconv"
	"strings"
)

// snapshot is a parsed pg_current_snapshot() (D8): 64-bit transaction IDs.
type snapshot struct {
	xmin, xmax uint64
	xip        map[uint64]struct{}
}

// parseSnapshot parses "xmin:xmax:xip,xip,…".
func parseSnapshot(s string) (*snapshot, bool) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return nil, false
	}
	xmin, err1 := strconv.ParseUint(parts[0], 10, 64)
	xmax, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil || xmin > xmax {
		return nil, false
	}
	snap := &snapshot{xmin: xmin, xmax: xmax, xip: map[uint64]struct{}{}}
	if parts[2] != "" {
		for _, p := range strings.Split(parts[2], ",") {
			x, err := strconv.ParseUint(p, 10, 64)
			if err != nil || x < xmin || x >= xmax {
				return nil, false
			}
			snap.xip[x] = struct{}{}
		}
	}
	return snap, true
}

// widen turns a 32-bit transaction ID from logical decoding into the 64-bit
// ID nearest to ref (PostgreSQL's epoch rule).
func widen(x uint32, ref uint64) uint64 {
	w := ref&^0xFFFFFFFF | uint64(x)
	switch {
	case w > ref && w-ref > 1<<31 && w >= 1<<32:
		w -= 1 << 32
	case w < ref && ref-w > 1<<31:
		w += 1 << 32
	}
	return w
}

// visible reports whether the snapshot saw the transaction xid committed:
// then its changes are already in the application's query result.
func (s *snapshot) visible(xid uint32) bool {
	x := widen(xid, s.xmax)
	if x < s.xmin {
		return true
	}
	if x >= s.xmax {
		return false
	}
	_, inProgress := s.xip[x]
	return !inProgress
}
