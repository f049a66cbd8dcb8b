// Package cursors is the Cursors service (spec §2.4): shared cursors in
// documents. A connection with an identity joins a document, then creates,
// moves and removes its cursors there; every other connection in the
// document is told (cursorAdded, cursorUpdated, cursorRemoved).
//
// Documents and private handles are any JSON value, compared by JSON value
// equality (jsonval.Canonical). Public handles are random integers in
// 0–65535, unique within a document. A cursor belongs to the connection that
// created it; leave and disconnect remove the connection's cursors in the
// document, each announced with cursorRemoved to the connections that stay.
//
// Processing: the memberships are a membership.Set, whose state per
// document is its cursors and per connection the cursors it created. The
// Set has one mutex; each command, and each disconnect, runs under it and
// queues its notifications (rpc.Conn.Send never blocks) before Handle
// returns, so the registry queues the response after them. Each
// notification is encoded once and shared by its recipients.
// cursorUpdated goes through rpc.Conn.SendLatest with a key unique to the
// cursor, so a lagging connection gets only the newest position. The
// Service starts no goroutines.
//
// Across nodes: with a Bridge (SetBridge), a document's state also holds
// the other nodes' cursors, which join lists and whose changes
// (RemoteCursors) are announced as local ones; this node gives out public
// handles from its own range only, so that they stay unique in a document
// across the cluster. Without a bridge nothing of this runs and the
// Service is the single-node one.
package cursors
