package cdc

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Replica identity settings of a table (TableConfig.ReplicaIdentity).
const (
	// IdentityFull: the reader sets REPLICA IDENTITY FULL on the table (or
	// fails with the SQL to run), so updates and deletes carry the whole old
	// row and unchanged TOAST values can be filled.
	IdentityFull = "full"
	// IdentityDefault: the table keeps its replica identity, which must
	// identify rows (a primary key, an identity index, or FULL).
	IdentityDefault = "default"
)

// TableConfig is one table the reader publishes.
type TableConfig struct {
	// Name is the table, optionally schema-qualified ("app.tasks");
	// unqualified names are in schema public. Quote identifiers that need
	// it as in SQL ("App"."Tasks").
	Name string
	// ReplicaIdentity is IdentityFull or IdentityDefault. Empty: full.
	ReplicaIdentity string
}

// Config configures a Reader (config section `database`).
type Config struct {
	// URL is the PostgreSQL connection URL. The role needs REPLICATION (or
	// superuser), CREATE on the database (publication) and ownership of the
	// tables (publication, REPLICA IDENTITY). Required.
	URL string
	// Slot is the permanent logical replication slot, created when absent.
	// Default "snorky".
	Slot string
	// Publication is kept covering exactly Tables. Default "snorky".
	Publication string
	// Tables are the published tables.
	Tables []TableConfig
	// TimeZone renders timestamptz values (an IANA zone name PostgreSQL
	// knows). Default "UTC".
	TimeZone string
	// StatusInterval is the period of standby status updates (confirmed
	// position, liveness). Default 5s.
	StatusInterval time.Duration
	// ReceiveTimeout (config key database.dead_link_timeout): a
	// replication connection from which nothing arrives for this long is
	// considered dead (a blackholed network, a hung PostgreSQL) and
	// replaced, with the usual backoff. A live link is never silent that
	// long: a reply is requested whenever a status period passes without a
	// message. It also bounds connecting (unless the URL sets
	// connect_timeout) and sets the TCP keepalives of the reader's
	// connections, and is the idle_session_timeout of the owner lock's
	// session. Default 4 × StatusInterval (20s); at least 2 ×
	// StatusInterval.
	ReceiveTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential, jittered delay
	// between reconnection attempts. Defaults 250ms and 30s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// WALPollInterval is the period of polling the slot's retained WAL,
	// wal_status and safe_wal_size (metrics, Status, Health). Default 15s;
	// negative disables polling.
	WALPollInterval time.Duration
	// MessagePrefix: transactional pg_logical_emit_message messages whose
	// prefix starts with it are delivered in Txn.Messages. Default "snorky".
	MessagePrefix string
	// MaxTxBytes bounds the decoded row data held for one transaction; a
	// larger transaction is handed on without its changes, TooLarge, with
	// the tables it touched (spec §3.10). 0: no bound.
	MaxTxBytes int
	// HeartbeatInterval is the period of the heartbeat: a non-transactional
	// pg_logical_emit_message(false, 'snorky.heartbeat', '') written on a
	// normal connection to the database, whose position is confirmed when
	// it comes back on the stream with nothing in flight, so that the slot
	// advances while this database is idle and others write (R4). Default
	// 10s; negative disables heartbeats.
	HeartbeatInterval time.Duration
}

// HeartbeatPrefix is the prefix of the reader's heartbeat messages.
const HeartbeatPrefix = "snorky.heartbeat"

// withDefaults returns c with each zero field that has a default set to
// it (the defaults are documented on the fields). NewReader, Check and
// Validate call it.
func (c Config) withDefaults() Config {
	if c.Slot == "" {
		c.Slot = "snorky"
	}
	if c.Publication == "" {
		c.Publication = "snorky"
	}
	if c.TimeZone == "" {
		c.TimeZone = "UTC"
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = 5 * time.Second
	}
	if c.ReceiveTimeout == 0 {
		c.ReceiveTimeout = 4 * c.StatusInterval
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 250 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.WALPollInterval == 0 {
		c.WALPollInterval = 15 * time.Second
	}
	if c.MessagePrefix == "" {
		c.MessagePrefix = "snorky"
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	for i := range c.Tables {
		if c.Tables[i].ReplicaIdentity == "" {
			c.Tables[i].ReplicaIdentity = IdentityFull
		}
	}
	return c
}

// Validate checks c (after defaults). Errors name the config key.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("database.url: required"))
	} else if _, err := pgconn.ParseConfig(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("database.url: %v", err))
	}
	if err := validSlotName(c.Slot); err != nil {
		errs = append(errs, fmt.Errorf("database.slot: %v", err))
	}
	if len(c.Publication) > 63 {
		errs = append(errs, fmt.Errorf("database.publication: %q is longer than 63 bytes", c.Publication))
	}
	if strings.ContainsAny(c.TimeZone, " '\"\\,\x00") {
		errs = append(errs, fmt.Errorf("database.timezone: %q is not a time zone name", c.TimeZone))
	}
	if c.StatusInterval < 0 {
		errs = append(errs, fmt.Errorf("database.status_interval: %v is negative", c.StatusInterval))
	}
	if c.ReceiveTimeout < 2*c.StatusInterval {
		errs = append(errs, fmt.Errorf("database.dead_link_timeout: %v is shorter than twice status_interval (%v): a live link could be taken for dead", c.ReceiveTimeout, c.StatusInterval))
	}
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("database.max_backoff: need 0 < min_backoff (%v) <= max_backoff (%v)", c.MinBackoff, c.MaxBackoff))
	}
	seen := make(map[string]int)
	for i, t := range c.Tables {
		key := fmt.Sprintf("database.tables[%d]", i)
		schema, name, err := SplitTableName(t.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", key, err))
			continue
		}
		q := schema + "." + name
		if j, ok := seen[q]; ok {
			errs = append(errs, fmt.Errorf("%s: %s is also database.tables[%d]", key, q, j))
		}
		seen[q] = i
		if t.ReplicaIdentity != IdentityFull && t.ReplicaIdentity != IdentityDefault {
			errs = append(errs, fmt.Errorf("%s.replica_identity: %q is neither %q nor %q", key, t.ReplicaIdentity, IdentityFull, IdentityDefault))
		}
	}
	return errors.Join(errs...)
}

// validSlotName applies PostgreSQL's rule for slot names.
func validSlotName(s string) error {
	if s == "" || len(s) > 63 {
		return fmt.Errorf("%q must be 1 to 63 characters", s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("%q may contain only lower-case letters, digits and underscores", s)
		}
	}
	return nil
}

// SplitTableName splits "schema.table" (or "table", in schema public) into
// its identifiers, following SQL quoting: unquoted identifiers are folded to
// lower case, "Quoted" ones kept.
func SplitTableName(s string) (schema, table string, err error) {
	var parts []string
	i := 0
	for {
		if i >= len(s) {
			return "", "", fmt.Errorf("%q: missing identifier", s)
		}
		var part string
		if s[i] == '"' {
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(s) {
					return "", "", fmt.Errorf("%q: unterminated quoted identifier", s)
				}
				if s[j] == '"' {
					if j+1 < len(s) && s[j+1] == '"' {
						b.WriteByte('"')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(s[j])
				j++
			}
			part, i = b.String(), j+1
		} else {
			j := i
			for j < len(s) && s[j] != '.' {
				c := s[j]
				if !(c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80) || (j == i && (c >= '0' && c <= '9' || c == '$')) {
					return "", "", fmt.Errorf("%q: invalid character %q in identifier (quote it)", s, c)
				}
				j++
			}
			part, i = strings.ToLower(s[i:j]), j
		}
		if part == "" {
			return "", "", fmt.Errorf("%q: empty identifier", s)
		}
		parts = append(parts, part)
		if i == len(s) {
			break
		}
		if s[i] != '.' {
			return "", "", fmt.Errorf("%q: expected '.' after identifier", s)
		}
		i++
	}
	switch len(parts) {
	case 1:
		return "public", parts[0], nil
	case 2:
		return parts[0], parts[1], nil
	}
	return "", "", fmt.Errorf("%q: expected [schema.]table", s)
}
