// Package cdc tails PostgreSQL with logical replication (pgoutput) and hands
// whole committed transactions (Txn) in commit order to a Sink, confirming
// to PostgreSQL only what the Sink has taken.
//
// # What it owns
//
// A Reader (NewReader, Run) keeps a publication equal to the configured
// tables (publish_via_partition_root), creates a permanent pgoutput slot
// when absent, checks each table's key and replica identity (CheckTables,
// R5) and streams from the slot. Check reports unmet prerequisites (wal_level,
// REPLICATION, slot, publication, tables) with their fix, changing nothing.
//
// # Goroutines
//
// Run's goroutine owns the replication connection, the relation cache, the
// type cache and the open transaction: it receives, decodes each message into
// owned values, and sends standby status updates from a timer. A second
// goroutine (the applier) calls Sink.Apply for each committed transaction, in
// order, through a hand-off of one transaction; while the sink is busy the
// reader keeps sending status updates, so a stalled pipeline never gets the
// walsender to time out, and PostgreSQL keeps the WAL. A QuickSink (one
// whose Apply never waits) is called on Run's goroutine instead, for a
// transaction of at most 256 changes when the applier has nothing queued:
// order is the same, and a transaction costs no wake-up of another thread.
// The replication socket is read with raw read(2) calls on the runtime's
// non-blocking descriptor (rawReadConn), which spares the scheduler's
// system-call bookkeeping and the monitor thread's wake-up that a process
// idle between transactions would otherwise pay on every read. A third goroutine
// polls the slot's retained WAL for the metric. While a session streams, a
// fourth writes a heartbeat every HeartbeatInterval on a connection of its
// own: a non-transactional logical message with prefix snorky.heartbeat
// and empty content. All stop when Run returns (the heartbeat when its
// session ends).
//
// When the slot is created and the snorky schema exists (migrations
// applied), the reader records a random epoch for the stream in
// snorky.stream; Epoch returns it. Without the schema there is no epoch.
//
// One process owns a slot (R1, owner.go): each session first takes a
// session-level advisory lock keyed on the slot name on its SQL connection.
// While another process holds it the reader is a standby (State, Health):
// it opens no replication connection and delivers nothing, and it goes on
// the moment the owner's session ends (a killed owner's sockets close).
// PostgreSQL's own rule, one walsender per slot (55006), is kept as the
// guard against a walsender that outlives its owner; it is retried at least
// every 5 s.
//
// A dead link (a blackholed network, a hung PostgreSQL: the socket stays
// open but nothing arrives) is found by the receive deadline: a replication
// connection silent for ReceiveTimeout (database.dead_link_timeout; a live
// one answers within a status interval) is logged, counted in
// snorky_cdc_dead_links_total and replaced with the usual backoff.
// Connecting is bounded by the same timeout (unless the URL sets
// connect_timeout) and the reader's sockets carry TCP keepalives derived
// from it, which find a vanished peer on an idle socket; a setup query in
// flight when the network dies is still bounded only by the kernel's
// retransmission timeout. The old walsender may still hold the slot
// afterwards (until wal_sender_timeout): that is the 55006 retry above.
//
// A slot PostgreSQL invalidated (wal_status lost, max_slot_wal_keep_size;
// SQLSTATE 55000 on reading it) cannot be resumed (R4, invalidation.go):
// the owner logs one error naming the fix, drops the slot and creates it
// afresh, which records a new epoch (clients must refetch), counts it in
// snorky_cdc_slot_invalidations_total and streams on; Run does not return.
// The WAL poller exports the slot's wal_status and safe_wal_size, and
// Health reports a slot about to be lost (unreserved).
//
// # Invariants
//
//   - The flush position sent to PostgreSQL is the end LSN
//     (TransactionEndLSN) of the latest transaction the sink took, or the
//     latest keepalive or heartbeat position when nothing is in flight (no
//     open transaction, nothing waiting for the sink). A heartbeat comes back
//     in WAL order, after every transaction committed before it, so an idle
//     database lets the slot advance while others write (R4). It never moves
//     backwards.
//     On shutdown the applier is allowed to finish and one final status
//     update is sent.
//   - After a lost connection the reader resumes after the last transaction
//     it handed on, so the sink sees no duplicate within one process; after a
//     restart PostgreSQL resends from the confirmed position (at-least-once).
//   - Row values are JSON equal to to_jsonb(row): the replication session
//     pins DateStyle=ISO, IntervalStyle=postgres, bytea_output=hex,
//     extra_float_digits=1 and the configured TimeZone; int8 and numeric
//     keep every digit. Composite-typed columns are rendered as their text
//     (to_jsonb would give an object).
//   - An unchanged TOAST value is filled from the old row (REPLICA IDENTITY
//     FULL) or named in Change.Unchanged; it is never reported as null.
//   - Malformed replication messages are an error (ErrMalformed) and a
//     reconnect, never a panic.
package cdc
