package datasync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/dealers"
	"github.com/snorkyhq/snorky/sync/token"
)

// Model is a model: a table's rows, or a name fed only by publishDeltas.
type Model struct {
	// Table is the schema-qualified table ("public.tasks"); empty for a
	// model fed only by publishDeltas.
	Table string
	// Key lists the key columns (the primary key by default; [id] without
	// a table).
	Key []string
	// Columns lists the columns that reach clients; empty means all.
	Columns []string
}

// Config configures the DataSync engine.
type Config struct {
	// Service is the frontend service's wire name (for notifications).
	Service string
	Models  map[string]Model
	Dealers map[string]dealers.Config
	// AcquireTimeout is how long an authorised subscription waits for its
	// acquire. Default 120s.
	AcquireTimeout time.Duration
	// PendingBytes bounds the deltas an acquire replays from the window
	// (what the subscription missed between authorisation and acquire);
	// past it the acquire answers "Subscription dropped: too many pending
	// deltas". Default 8 MiB.
	PendingBytes int
	// Signer signs subscription tokens. Required.
	Signer *token.Signer
	// Database says a PostgreSQL source feeds the engine (snapshots need
	// one).
	Database bool
	// HistoryMaxAge and HistoryMaxBytes bound the replay window: the recent
	// transactions kept for acquire, resume (§3.9) and snapshot handoff
	// (D8). Defaults 2 minutes (or AcquireTimeout when longer) and 64 MiB.
	HistoryMaxAge   time.Duration
	HistoryMaxBytes int
	// MaxTxBytes bounds a publishDeltas batch ("Batch too large"); the
	// PostgreSQL reader bounds transactions with the same figure. 0: no
	// bound. Default 64 MiB.
	MaxTxBytes int
	// PositionInterval is how often opted-in connections get position
	// notifications (at most). Default 5s.
	PositionInterval time.Duration
	// ResumeWait is how long a resume waits for the server to reach the
	// client's offset (after a restart). Default 10s.
	ResumeWait time.Duration
	// ResumeTTL is the lifetime of resume credentials. Default 24h.
	ResumeTTL time.Duration
	// PublishWAL, with a database, writes a publishDeltas batch to the WAL
	// as a transactional logical message (prefix MessagePrefix) and returns
	// the message's LSN; the batch is delivered when the reader takes it.
	// Nil: batches are delivered from memory.
	PublishWAL func(ctx context.Context, payload []byte) (lsn cdc.LSN, err error)
	// CurrentSnapshot returns pg_current_snapshot() of the server's own
	// connection, to refuse snapshots from the future. Nil: only the
	// transactions seen are used.
	CurrentSnapshot func(ctx context.Context) (string, error)
	// Publish delivers a PubSub message published from SQL (snorky.publish);
	// nil refuses such messages.
	Publish func(channel, message json.RawMessage) error
	// StreamFed says a cluster's stream feeds the engine: without a
	// database too, it takes its epoch from the stream's first record
	// (StartStream) instead of making one up.
	StreamFed bool
	// Claim, in a cluster, makes an acquire single-use across every node:
	// it records the subscription id as acquired and fails when another
	// node (or this one) already did. With Claim set, an acquire of a
	// subscription authorised on another node is served from its token,
	// which carries everything the subscription needs. It returns the
	// binding's revision (see Rebind). Nil: one node.
	Claim func(id string) (rev uint64, err error)
	// Rebind, in a cluster, records that a resume binds subscription id on
	// this node, and returns the binding's revision: one order for every
	// node, so that a binding made after another has the greater revision
	// whatever the nodes' clocks say. Nil: one node.
	Rebind func(id string) (rev uint64, err error)
	// Resumed, in a cluster, tells the other nodes that the resume whose
	// binding has revision rev took the subscription over here (they call
	// Engine.Release). It is called after the engine's lock is released.
	// Nil: one node.
	Resumed func(id string, rev uint64)
	// Now returns the time; default time.Now (tests).
	Now func() time.Time
}

// Validate reports the first problem. Errors name the field, or the
// model or dealer by its name ("models.Task.key", "dealers.ByOwner.key").
func (c *Config) Validate() error {
	if c.Signer == nil {
		return errors.New("Signer: required to sign subscription tokens")
	}
	if c.AcquireTimeout < 0 {
		return errors.New("AcquireTimeout: must be positive")
	}
	if c.PendingBytes < 0 {
		return errors.New("PendingBytes: must be positive")
	}
	if c.MaxTxBytes < 0 {
		return errors.New("MaxTxBytes: must be 0 (no cap) or positive")
	}
	if c.PositionInterval < 0 {
		return errors.New("PositionInterval: must be positive")
	}
	if c.ResumeWait < 0 {
		return errors.New("ResumeWait: must be positive")
	}
	if c.ResumeTTL < 0 {
		return errors.New("ResumeTTL: must be positive")
	}
	if age, acq := c.HistoryMaxAge, c.AcquireTimeout; age > 0 && acq > age {
		return fmt.Errorf("AcquireTimeout: %v is longer than HistoryMaxAge (%v): an acquire replays what the subscription missed from the window, so the window must outlive the acquire deadline", acq, age)
	}
	tables := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(c.Models)) {
		m := c.Models[name]
		if name == "" {
			return errors.New("models: a model needs a name")
		}
		if m.Table != "" {
			if other, ok := tables[m.Table]; ok {
				return fmt.Errorf("models.%s.table: table %s is already the table of model %s", name, m.Table, other)
			}
			tables[m.Table] = name
		}
		for i, col := range m.Key {
			if col == "" {
				return fmt.Errorf("models.%s.key[%d]: empty column name", name, i)
			}
		}
		if len(m.Columns) > 0 {
			for _, k := range m.Key {
				if !slices.Contains(m.Columns, k) {
					return fmt.Errorf("models.%s.columns: must include the key column %q", name, k)
				}
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Dealers)) {
		d := c.Dealers[name]
		if _, err := dealers.New(name, d); err != nil {
			return err
		}
		m, ok := c.Models[d.Model]
		if !ok {
			return fmt.Errorf("dealers.%s.model: no model named %q; declare it under models", name, d.Model)
		}
		if d.Kind == dealers.KindSimple && len(m.Columns) > 0 {
			col := d.Key
			for i := range col {
				if col[i] == '.' {
					col = col[:i]
					break
				}
			}
			if !slices.Contains(m.Columns, col) {
				return fmt.Errorf("dealers.%s.key: column %q is not among the columns of model %s", name, col, d.Model)
			}
		}
	}
	return nil
}

// withDefaults returns c with each zero field that has a default set to
// it (the defaults are documented on the fields). New calls it after
// Validate.
func (c Config) withDefaults() Config {
	if c.AcquireTimeout == 0 {
		c.AcquireTimeout = 120 * time.Second
	}
	if c.PendingBytes == 0 {
		c.PendingBytes = 8 << 20
	}
	if c.PositionInterval == 0 {
		c.PositionInterval = 5 * time.Second
	}
	if c.ResumeWait == 0 {
		c.ResumeWait = 10 * time.Second
	}
	if c.ResumeTTL == 0 {
		c.ResumeTTL = 24 * time.Hour
	}
	if c.HistoryMaxAge == 0 {
		// At least the acquire deadline: the window must outlive it (see
		// Validate), and without a database nothing else sets it.
		c.HistoryMaxAge = max(2*time.Minute, c.AcquireTimeout)
	}
	if c.HistoryMaxBytes == 0 {
		c.HistoryMaxBytes = 64 << 20
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Service == "" {
		c.Service = "datasync"
	}
	return c
}
