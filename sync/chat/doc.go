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
package chat
