// Package presence joins the Chat and Cursors services of the nodes of a
// cluster through NATS: a channel or a document spans every node whose
// connections are in it.
//
// What a node holds in a room (a chat channel or a document) is its
// record there, in a JetStream key-value bucket in memory: the key
// "<room token>.<node token>" (base64url, unpadded, of the room's
// canonical JSON and of the node ID) holds the node's identities present
// in a channel (bucket snorky_<cluster>_chat) or its cursors in a
// document (snorky_<cluster>_cursors). A node writes its record after
// each change, puts every record again every ttl/3 (the heartbeat), and
// deletes a record when it holds nothing there; the bucket's TTL (ttl)
// drops what a dead node left.
//
// A node watches a room's keys only while its connections are in the
// room: the first join there waits until the watch has delivered the
// other nodes' records, which the join reply then includes; the watch
// stops after the last connection leaves. Each change of another node's
// record is handed to the service, which announces the difference to its
// connections exactly as for local ones (presence "joined"/"left",
// counted per identity across nodes; cursorAdded, cursorUpdated,
// cursorRemoved). Survivors reap: a record not put again within ttl is
// dropped as if deleted, so a node killed without a goodbye has its
// members leave, and its cursors removed, within ttl and a tenth (the
// reaper's tick) on every other node. A stopped node deletes its records
// at once.
//
// Chat messages and read receipts do not go through the bucket: the
// sending node publishes the notification as encoded for its own members
// on <prefix>.chat.<channel token>, to which a node subscribes while its
// connections are in the channel (before its first join there is
// answered). A node skips its own publications (header Snorky-Node), so
// each member gets a message once; NATS keeps one publisher's order, so a
// sender's messages arrive in order. The frame carries the sending node's
// service name and timestamp.
//
// Cursor handles: public handles are integers 0–65535 (spec §2.4), so
// they are split in Slots ranges of HandlesPerSlot; a node claims one
// slot (the key "s<n>" of snorky_<cluster>_cursor_slots, kept by the same
// heartbeat) and gives out handles of its range only. At most Slots
// nodes run Cursors at once; each may hold HandlesPerSlot cursors per
// document.
//
// Goroutines: per bridge, one publisher (records and heartbeats) and one
// reaper; per room watched, one watch; Cursors adds the slot keeper. All
// end in stop, which also deletes this node's records. Locks: the
// service's lock is taken after the bridge's room locks are released,
// never the other way.
package presence
