package cdc

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pglogrepl"
)

// LSN is a WAL position: pglogrepl's type, whose String is PostgreSQL's
// text form ("16/B374D848"). Packages that must not import pglogrepl
// (sync/...) name it cdc.LSN.
type LSN = pglogrepl.LSN

// Op is the kind of a row change.
type Op uint8

// The row change kinds.
const (
	Insert Op = iota + 1
	Update
	Delete
	Truncate
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Truncate:
		return "truncate"
	}
	return "unknown"
}

// Column is one column of a row image: its name and its value as JSON text
// equal to what to_jsonb renders for it (D6). A SQL NULL is the JSON text
// "null".
type Column struct {
	Name  string
	Value json.RawMessage
}

// Change is one row change of a transaction.
type Change struct {
	// Table is the schema-qualified table name, e.g. "public.tasks".
	Table string
	Op    Op
	// New is the new row (Insert, Update), in table column order.
	New []Column
	// Old is the old row image (Update, Delete) as REPLICA IDENTITY gives
	// it: every column under FULL, the key columns under DEFAULT (for an
	// update that changed no key, PostgreSQL sends none and the reader takes
	// the key columns of New).
	Old []Column
	// Unchanged names the columns of New whose value is unchanged TOAST that
	// could not be filled from Old (REPLICA IDENTITY DEFAULT). Their Value in
	// New is absent; spec §3.8 marks them "unchanged".
	Unchanged []string
}

// Message is a transactional logical message (pg_logical_emit_message) with
// the snorky prefix, in its place among the changes of its transaction.
type Message struct {
	// Index is the number of Changes that precede the message.
	Index   int
	Prefix  string
	Content []byte
	LSN     LSN
}

// Txn is one committed transaction, handed on whole and in commit order.
type Txn struct {
	Xid uint32
	// CommitLSN is the LSN of the commit record.
	CommitLSN LSN
	// EndLSN is the end of the transaction (pgoutput's TransactionEndLSN):
	// the position that is safe to confirm once the Txn has been taken.
	EndLSN     LSN
	CommitTime time.Time
	Changes    []Change
	Messages   []Message
	// TooLarge says the transaction's decoded data (row data and logical
	// messages) passed Config.MaxTxBytes: Changes and Messages are empty,
	// and Tables lists the tables it touched (spec §3.10), and
	// MessagesDropped when logical messages were left out.
	TooLarge bool
	Tables   []string
	// Partial says this is a chunk of a larger transaction, handed on
	// before its commit so that the reader never holds a large
	// transaction whole: the chunks of one Xid come in order, and the last
	// one (Partial false) carries the commit's CommitLSN and EndLSN. Only
	// committed transactions are sent (pgoutput protocol version 1); a
	// sink discards an unfinished one when a new session starts
	// (StreamStarter).
	Partial bool
	// size is the decoded bytes so far (while the transaction is open);
	// chunked says Partial chunks of it were handed on.
	size    int
	chunked bool
}

// Sink takes whole transactions in commit order. Once it returns nil the
// transaction is the taker's (it may release its changes), and its EndLSN
// may be confirmed.
type Sink interface {
	Apply(txn *Txn) error
}

// QuickSink is implemented by a sink whose Apply never waits for long: it
// takes only short locks and never blocks on I/O or on a consumer. When
// nothing is queued for the applier, the reader then calls Apply on its own
// goroutine for a small transaction, which saves a goroutine hand-off (a
// wake-up of another thread) per transaction at low rates. Other sinks are
// always called from the applier, so that the reader keeps receiving and
// sending status updates however long they take.
type QuickSink interface {
	Sink
	// QuickApply marks the sink; it is never called.
	QuickApply()
}

// StreamStarter is implemented by a sink that wants to know, in order with
// the transactions, where each replication session's stream starts: epoch
// is the stream's epoch (snorky.stream; "" without the snorky schema),
// from the position the session streams after (the slot's confirmed
// position on a fresh start), and horizon a pg_current_snapshot() taken
// once this process owned the slot and before it streamed: every
// transaction the horizon did not see will be streamed.
type StreamStarter interface {
	StartStream(epoch string, from LSN, horizon string) error
}

// StreamPositioner is implemented by a sink that keeps its own durable copy
// of the stream (a cluster's JetStream stream): each session streams after
// the position it reports when that is past what this process handed on
// and past the slot's confirmed position, so that a new owner of the slot
// does not send again what the copy already holds.
type StreamPositioner interface {
	// StreamPosition reports the copy's position in epoch (the stream's
	// epoch; "" when unknown), 0 when it holds none of that epoch.
	StreamPosition(ctx context.Context, epoch string) (LSN, error)
}

// ConfirmLimiter is implemented by a sink that holds transactions it took
// (a replay window): the reader never confirms past lsn while limited, so
// that after a restart PostgreSQL sends them again (R2, R3).
type ConfirmLimiter interface {
	ConfirmLimit() (lsn LSN, limited bool)
}

// OwnerGate is implemented by a sink that is not always able to take
// transactions (a cluster's publisher without NATS): while CanOwn
// reports an error, the reader does not take the slot's ownership, so that
// another process may.
type OwnerGate interface {
	CanOwn() error
}

// ErrSinkStopped, wrapped in an error of StreamPosition, says the sink
// cannot go on: the reader stops with it instead of retrying. (Any error of
// Apply or StartStream already stops the reader.)
var ErrSinkStopped = errors.New("the sink stopped")

// ConfirmGate is a ConfirmLimiter whose limit holds even while the reader
// is idle: what it took is not safe yet (a cluster's stream publishes
// asynchronously, and confirms to PostgreSQL only what JetStream stored).
// A replay window's limit is lifted when idle, so that PostgreSQL's
// shutdown is not held up; a gate's is not.
type ConfirmGate interface {
	ConfirmLimiter
	// GateConfirm marks the sink; it is never called.
	GateConfirm()
}

// MessagesDropped is listed in the Tables of a TooLarge transaction that
// left out logical messages (SQL publishing). No table is named so: table
// names are schema-qualified.
const MessagesDropped = "(logical messages)"
