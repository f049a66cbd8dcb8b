// Package chat is the Chat service (spec §2.3): channels with presence, where
// one identity may be connected several times (devices).
//
// Membership is per connection, presence per identity: "joined" goes to the
// connections already in a channel when an identity's first connection
// joins it, "left" to the remaining ones when its last connection leaves or
// disconnects. Channels are any JSON value, compared by JSON value equality
// (jsonval.Canonical); notifications repeat a channel as the acting
// connection gave it.
//
// Processing: the memberships are a membership.Set, whose state per
// channel is its presence (identity → connections). The Set has one mutex;
// each command, and each disconnect, runs under it, and queues its notifications (rpc.Conn.Send never blocks)
// before Handle returns, so the registry queues the response after them.
// Each notification is encoded once and the same bytes go to every
// recipient. The Service starts no goroutines.
//
// Across nodes: with a Bridge (SetBridge), a channel's state also holds
// the identities present on the other nodes, and presence is counted per
// identity across the cluster: "joined" and "left" go out only when an
// identity's first connection anywhere joins and its last one anywhere
// leaves, and the join reply lists every node's members. The bridge hands
// on this node's presence and messages and hands back the other nodes'
// (RemotePresence, Deliver, DeliverRead). Without a bridge nothing of this
// runs and the Service is the single-node one.
package chat
