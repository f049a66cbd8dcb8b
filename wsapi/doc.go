// Package wsapi is the WebSocket transport of the frontend: it upgrades HTTP
// requests (checking Origin), and gives every connection a reader goroutine,
// which hands each message to the rpc.Registry in arrival order, and a writer
// goroutine, which drains the connection's send queue and writes everything
// queued with one system call. The reader runs apart from net/http's
// handler goroutine (released after the upgrade), and handles each message
// on a short-lived goroutine it waits for, so that an idle reader keeps only
// the small stack a blocked read needs.
//
// Invariants:
//   - Conn.Send never blocks. The queue is bounded in bytes; a connection
//     whose queue would pass the bound is closed with 4008 "slow consumer"
//     and its queued frames are dropped. Nobody else waits for it.
//   - One writer at a time: the writer goroutine, or a write-through
//     (writethrough.go: a sender writing to an idle plain-TCP connection
//     with one non-blocking system call, the rest left to the writer),
//     claimed under the connection's lock. Pings come from a shared ticker
//     (one timer for all connections), which writes an idle connection's
//     ping itself under the same claim (pingNow) and otherwise asks the
//     writer for it; the writer also sends the pongs, queued by the reader.
//     The reader's deadline is refreshed by every message and pong.
//   - Writes to a plain socket start with one raw non-blocking write(2)
//     (rawWriter.try: no scheduler bookkeeping, no deadline); only what the
//     socket does not take is written through net.Conn under the write
//     deadline. A writer woken for a frame or two within 2 ms of its last
//     write yields once first, so that one write carries more frames.
//   - Nothing logs or touches a socket under a connection's lock; a slow
//     consumer is logged by its writer, off the broadcast path.
//   - Registry.Disconnect runs exactly once per connection, after its last
//     message has been handled.
//   - Every resource a client controls is bounded (limits.go, idle.go,
//     ratelimit.go): connections in total and per client address (refused
//     with HTTP 503 / 429 before the upgrade), idle and unauthenticated
//     connections (closed with 4002 by one sweep goroutine for all
//     connections, and one for all SockJS sessions), commands per second (a token bucket, abuse measured over
//     a sliding window, 4029), and replies larger than the free queue (an
//     error reply instead of a 4008).
//   - A slow consumer gets a real 4008 close frame: the frame being written
//     is completed and the close frame follows it, under its own short
//     deadline (slowclose.go).
//
// Data frames are written by the writer directly to the network connection
// (unmasked server frames: a header and the payload), so that many queued
// messages leave in one write; gorilla/websocket does the handshake, reading,
// and the close frame.
//
// Beside the WebSocket endpoint, the package serves the JavaScript client
// (client.go: /snorky.js, /snorky.mjs, embedded from client/) and the SockJS
// endpoints (sockjs.go, spec §7), whose sessions are connections for the
// same registry, with a byte-bounded queue and writer goroutine of their own.
package wsapi
