// Package membership is the bookkeeping that the services of Snorky share:
// connections join and leave named rooms (a PubSub or Chat channel, a
// Cursors document, an identity), and leave all of them when they
// disconnect.
//
// A Set owns that bookkeeping and nothing else: which connections are in
// which room and which rooms each connection is in, the canonical room key
// (jsonval.Canonical, so rooms are any JSON value compared by JSON
// equality), the per-connection limits (how many rooms, how long a key),
// and the removal of a room with its last member and of a connection's
// record with its last room. The service keeps its semantics (presence,
// cursors, the notifications it sends) in the State fields of Room and
// Member, and runs them in the hooks Set calls.
//
// Connections are keyed by rpc.Conn.ID, not by the rpc.Conn handle: an ID
// is one machine word to hash, it does not require the transport's type to
// be comparable (a map keyed by an interface panics on a value that is
// not), and it is the same number the logs carry as "conn". The handle is
// kept beside it, for sending.
//
// Concurrency: a Set has one mutex. Every method takes it, and every hook
// runs under it, so a service's semantics change atomically with the
// memberships they depend on; a hook may send (rpc.Conn.Send never blocks)
// but must not call back into the Set. A Set starts no goroutines.
package membership
