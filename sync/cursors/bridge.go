package cursors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/snorkyhq/snorky/sync/membership"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Bridge joins a Service to the Cursors services of the other nodes of a
// cluster (package cmd/snorky/internal/cluster/presence implements it).
// Documents are named by their canonical key (jsonval.Canonical).
//
// The Service calls Acquire before a connection joins a document and
// Release once for every successful Acquire (after a refused join, or when
// the connection leaves or disconnects). Between the two it reports this
// node's cursors in the document (Cursors); the bridge hands back the
// other nodes' cursors through RemoteCursors.
type Bridge interface {
	// Acquire readies document k for a join: once it returns, Remote
	// knows the other nodes' cursors there and their changes reach
	// RemoteCursors. It is called outside the Service's lock and may
	// block; an error refuses the join (Internal error).
	Acquire(k string) error
	// Release undoes one Acquire. It is called under the Service's lock
	// and must not block.
	Release(k string)
	// Remote returns the cursors of the other nodes in document k as last
	// known, by node. It is called under the Service's lock, when the
	// document gets its first connection on this node.
	Remote(k string) map[string][]Cursor
	// Cursors reports this node's cursors in document k, the whole list,
	// after each change; none when the last one is removed. It is called
	// under the Service's lock, must not block, and may keep the slice
	// (its JSON values are never modified).
	Cursors(k string, cursors []Cursor)
}

// Cursor is a cursor as the protocol serialises it.
type Cursor struct {
	PublicHandle int             `json:"publicHandle"`
	Document     json.RawMessage `json:"document"`
	Position     json.RawMessage `json:"position"`
	Status       json.RawMessage `json:"status"`
	Owner        json.RawMessage `json:"owner"`
}

// SetBridge joins the Service to other nodes through b, this node giving
// out the public handles first to first+n-1 only, a range no other node
// uses, so that handles stay unique in a document across the cluster.
// Call it before serving; without it the Service is the single-node
// service of the spec, with handles 0–65535.
func (s *Service) SetBridge(b Bridge, first, n int) error {
	if first < 0 || n < 1 || first+n > handles {
		return fmt.Errorf("cursor handles %d to %d: outside 0–%d", first, first+n-1, handles-1)
	}
	s.bridge, s.firstHandle, s.numHandles = b, first, n
	return nil
}

// RemoteCursors sets the cursors of node in document k (canonical), the
// whole list, none when the node has no cursor left there. This node's
// connections in the document are told of each change as of a local one:
// cursorAdded, cursorUpdated (through SendLatest) and cursorRemoved. A
// cursor whose handle is already taken in the document is left out. It is
// a no-op when no connection of this node is in the document.
func (s *Service) RemoteCursors(k, node string, cursors []Cursor) {
	s.set.WithRoom(k, func(d *membership.Room[docState]) {
		s.setRemote(d, node, cursors, true)
	})
}

// setRemote replaces node's cursors in d, announcing the changes when
// notify is set. It runs under the set's mutex.
func (s *Service) setRemote(d *membership.Room[docState], node string, cursors []Cursor, notify bool) {
	if d.State.remote == nil {
		d.State.remote = map[string]map[int]*cursor{}
	}
	old := d.State.remote[node]
	next := make(map[int]*cursor, len(cursors))
	for _, rc := range cursors {
		h := rc.PublicHandle
		if cur := old[h]; cur != nil {
			if bytes.Equal(cur.position, rc.Position) && bytes.Equal(cur.status, rc.Status) &&
				bytes.Equal(cur.owner, rc.Owner) && bytes.Equal(cur.docJSON, rc.Document) {
				next[h] = cur
				continue
			}
			cur.position, cur.status, cur.owner, cur.docJSON = rc.Position, rc.Status, rc.Owner, rc.Document
			next[h] = cur
			if notify {
				msg := cur.appendJSON([]byte(`{"type":"cursorUpdated","cursor":`))
				msg = append(msg, '}')
				s.toOthers(d, 0, rpc.AppendEnvelope(nil, s.name, msg), cur.latest) // 0: no connection acted here
			}
			continue
		}
		if _, taken := d.State.cursors[h]; taken || h < 0 || h >= handles {
			continue
		}
		s.serial++
		cur := &cursor{
			public:   h,
			doc:      d,
			docJSON:  rc.Document,
			owner:    rc.Owner,
			position: rc.Position,
			status:   rc.Status,
			latest:   string(s.name) + "\x00cursor\x00" + strconv.FormatUint(s.serial, 10),
		}
		d.State.cursors[h] = cur
		next[h] = cur
		if notify {
			msg := cur.appendJSON([]byte(`{"type":"cursorAdded","cursor":`))
			msg = append(msg, '}')
			s.toOthers(d, 0, rpc.AppendEnvelope(nil, s.name, msg), "")
		}
	}
	for h, cur := range old {
		if next[h] != nil {
			continue
		}
		delete(d.State.cursors, h)
		if notify {
			s.toOthers(d, 0, s.removedFrame(cur), "")
		}
	}
	if len(next) == 0 {
		delete(d.State.remote, node)
	} else {
		d.State.remote[node] = next
	}
}

// changed reports this node's cursors in d to the bridge, if any. It runs
// under the set's mutex.
func (s *Service) changed(d *membership.Room[docState]) {
	if s.bridge == nil {
		return
	}
	var own []Cursor
	for _, cur := range d.State.cursors {
		if cur.private == "" {
			continue // another node's
		}
		own = append(own, Cursor{
			PublicHandle: cur.public,
			Document:     cur.docJSON,
			Position:     cur.position,
			Status:       cur.status,
			Owner:        cur.owner,
		})
	}
	s.bridge.Cursors(d.Key, own)
}
