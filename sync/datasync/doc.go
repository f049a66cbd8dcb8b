// Package datasync is the DataSync service (spec §2.5 and §3): the backend
// authorises subscriptions and gets signed, single-use tokens; browsers
// acquire them; and every delta, from publishDeltas or from a PostgreSQL
// transaction (Engine.Apply), is routed through the dealers of its model to
// the subscriptions that match it, with the insert/update/delete transitions
// of §3.2.
//
// One mutex (Engine.mu) guards everything: subscriptions, dealers, pending
// buffers and the stream position. Routing runs under it and only queues
// frames, or writes them to an idle connection with one non-blocking system
// call (rpc.SendImmediate: neither ever blocks), so a transaction's deltas
// reach every connection contiguously and in commit order, and acquire
// flushes a subscription's pending deltas before its response with nothing
// in between. Logging and closing connections wait until mu is released
// (Engine.unlock).
//
// Each delta is encoded at most once per shape (the update itself, the
// insert and the delete it becomes for subscriptions entering or leaving the
// match), and the same bytes are queued for every subscription of that shape.
//
// engine.go holds the engine's state and applies transactions (turning
// changes into deltas, the stream position, the replay window's input);
// route.go matches deltas to subscriptions and queues each connection's
// share.
package datasync
