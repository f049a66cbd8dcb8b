package cdc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors callers may branch on.
var (
	// ErrSlotInUse: another connection streams from the slot (SQLSTATE
	// 55006). The reader waits and retries.
	ErrSlotInUse = errors.New("replication slot is in use by another connection")
	// ErrSlotInvalidated: the slot lost WAL it needed (wal_status "lost",
	// max_slot_wal_keep_size; SQLSTATE 55000 on reading it). Changes were
	// lost; the reader drops and recreates the slot with a new epoch.
	ErrSlotInvalidated = errors.New("replication slot was invalidated")
	// ErrPrerequisite marks an error the reader cannot recover from by
	// retrying (configuration, privileges, missing tables, wal_level). Run
	// returns it.
	ErrPrerequisite = errors.New("prerequisite not met")
)

// prerequisite wraps err as ErrPrerequisite.
func prerequisite(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrPrerequisite, fmt.Sprintf(format, args...))
}

// pinnedParams are the session settings of the replication connection, so
// that decoded values do not depend on the cluster's defaults (D6).
func pinnedParams(tz string) map[string]string {
	return map[string]string{
		"DateStyle":          "ISO",
		"IntervalStyle":      "postgres",
		"bytea_output":       "hex",
		"extra_float_digits": "1",
		"TimeZone":           tz,
		"client_encoding":    "UTF8",
	}
}

func connConfig(cfg Config, replication bool) (*pgconn.Config, error) {
	pc, err := pgconn.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	if pc.RuntimeParams["application_name"] == "" {
		pc.RuntimeParams["application_name"] = "snorky"
	}
	boundLink(pc, cfg)
	if replication {
		pc.RuntimeParams["replication"] = "database"
		for k, v := range pinnedParams(cfg.TimeZone) {
			pc.RuntimeParams[k] = v
		}
	}
	return pc, nil
}

// boundLink bounds how long a dead network keeps the reader's connections
// hanging: connecting gives up after the dead-link timeout (unless the URL
// sets connect_timeout), and TCP keepalives probe an idle socket so that a
// peer that vanished is noticed within about that timeout too.
func boundLink(pc *pgconn.Config, cfg Config) {
	t := cfg.WithDefaults().ReceiveTimeout
	if t <= 0 {
		return
	}
	if pc.ConnectTimeout == 0 {
		pc.ConnectTimeout = t
	}
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable:   true,
		Idle:     max(t/2, time.Second),
		Interval: max(t/6, time.Second),
		Count:    3,
	}}
	pc.DialFunc = d.DialContext
}

// connectSQL opens a normal (non-replication) connection.
func connectSQL(ctx context.Context, cfg Config) (*pgx.Conn, error) {
	pcfg, err := pgx.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	if pcfg.RuntimeParams["application_name"] == "" {
		pcfg.RuntimeParams["application_name"] = "snorky"
	}
	boundLink(&pcfg.Config, cfg)
	conn, err := pgx.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	return conn, nil
}

// connectReplication opens a logical replication connection with the
// pinned session settings.
func connectReplication(ctx context.Context, cfg Config) (*pgconn.PgConn, error) {
	pc, err := connConfig(cfg, true)
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("opening replication connection: %w", err)
	}
	return conn, nil
}

// sqlLookup looks type OIDs up in pg_type (and the attributes of composite
// types in pg_attribute).
func sqlLookup(conn *pgx.Conn) typeLookup {
	return func(ctx context.Context, oids []uint32) ([]typeRow, error) {
		rows, err := conn.Query(ctx, `
			SELECT t.oid, t.typtype, t.typelem, t.typbasetype, t.typdelim,
			       t.typelem <> 0 AND t.typsubscript = 'array_subscript_handler'::regproc,
			       t.typrelid
			FROM pg_type t WHERE t.oid = ANY($1)`, oids)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []typeRow
		byRel := map[uint32]int{} // typrelid of a composite → index in out
		for rows.Next() {
			var r typeRow
			var typ, delim string
			var relid uint32
			if err := rows.Scan(&r.OID, &typ, &r.Elem, &r.BaseType, &delim, &r.IsArray, &relid); err != nil {
				return nil, err
			}
			if typ != "" {
				r.Type = typ[0]
			}
			if delim != "" {
				r.Delim = delim[0]
			}
			if r.Type == 'c' && relid != 0 {
				byRel[relid] = len(out)
			}
			out = append(out, r)
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if len(byRel) == 0 {
			return out, nil
		}
		rels := make([]uint32, 0, len(byRel))
		for rel := range byRel {
			rels = append(rels, rel)
		}
		attrs, err := conn.Query(ctx, `
			SELECT attrelid, attname, atttypid FROM pg_attribute
			WHERE attrelid = ANY($1) AND attnum > 0 AND NOT attisdropped
			ORDER BY attrelid, attnum`, rels)
		if err != nil {
			return nil, err
		}
		defer attrs.Close()
		for attrs.Next() {
			var rel uint32
			var a typeAttr
			if err := attrs.Scan(&rel, &a.Name, &a.Type); err != nil {
				return nil, err
			}
			out[byRel[rel]].Attrs = append(out[byRel[rel]].Attrs, a)
		}
		return out, attrs.Err()
	}
}

// tableState is what the catalog says about a configured table.
type tableState struct {
	index     int
	cfg       TableConfig
	sql       string // quoted, schema-qualified name
	name      string // schema.table
	exists    bool
	oid       uint32
	relkind   string
	replident string // d, n, f, i
	hasPK     bool
	hasIdent  bool // a replica identity index
	owner     bool // the current role owns it (or is superuser)
	leaves    []leafState
}

// leafState is a partition of a partitioned table.
type leafState struct {
	sql       string
	replident string
}

func inspectTables(ctx context.Context, conn *pgx.Conn, tables []TableConfig) ([]tableState, error) {
	out := make([]tableState, 0, len(tables))
	for i, t := range tables {
		schema, name, err := SplitTableName(t.Name)
		if err != nil {
			return nil, prerequisite("database.tables[%d]: %v", i, err)
		}
		st := tableState{
			index: i,
			cfg:   t,
			sql:   pgx.Identifier{schema, name}.Sanitize(),
			name:  schema + "." + name,
		}
		err = conn.QueryRow(ctx, `
			SELECT c.oid, c.relkind::text, c.relreplident::text,
			       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
			       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident),
			       pg_has_role(c.relowner, 'USAGE')
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2`, schema, name).
			Scan(&st.oid, &st.relkind, &st.replident, &st.hasPK, &st.hasIdent, &st.owner)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return nil, fmt.Errorf("inspecting table %s: %w", st.name, err)
		default:
			st.exists = true
		}
		if st.exists && st.relkind == "p" {
			rows, err := conn.Query(ctx, `
				SELECT t.relid::regclass::text, c.relreplident::text
				FROM pg_partition_tree($1) t JOIN pg_class c ON c.oid = t.relid
				WHERE t.isleaf AND t.relid <> $1`, st.oid)
			if err != nil {
				return nil, fmt.Errorf("listing partitions of %s: %w", st.name, err)
			}
			for rows.Next() {
				var l leafState
				if err := rows.Scan(&l.sql, &l.replident); err != nil {
					rows.Close()
					return nil, err
				}
				st.leaves = append(st.leaves, l)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, err
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// tableProblems says what is wrong with a table: the problems the reader
// cannot fix, and the ALTER statements it would run (replica identity).
func (st tableState) problems() (problems []Problem, fixes []string) {
	key := fmt.Sprintf("database.tables[%d]", st.index)
	if !st.exists {
		return []Problem{{
			Key:  key,
			What: fmt.Sprintf("table %s does not exist", st.name),
			Fix:  fmt.Sprintf("create table %s (or remove it from the configuration); check the schema-qualified name", st.name),
		}}, nil
	}
	if st.relkind != "r" && st.relkind != "p" {
		return []Problem{{
			Key:  key,
			What: fmt.Sprintf("%s is not a table (relkind %q): only tables can be published", st.name, st.relkind),
			Fix:  "configure the underlying table instead",
		}}, nil
	}
	full := fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", st.sql)
	if st.cfg.ReplicaIdentity == IdentityFull {
		if st.replident != "f" {
			fixes = append(fixes, full)
		}
		for _, l := range st.leaves {
			if l.replident != "f" {
				fixes = append(fixes, fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", l.sql))
			}
		}
		if len(fixes) > 0 && !st.owner {
			problems = append(problems, Problem{
				Key: key + ".replica_identity",
				What: fmt.Sprintf("table %s needs REPLICA IDENTITY FULL (replica_identity: full, so updates and deletes carry the whole old row) "+
					"and the current role does not own it, so snorky cannot set it", st.name),
				Fix: "run as the table's owner: " + strings.Join(fixes, " "),
			})
			fixes = nil
		}
	} else {
		identifies := func(ri string, pk, idx bool) bool {
			return ri == "f" || ri == "d" && pk || ri == "i" && idx
		}
		if !identifies(st.replident, st.hasPK, st.hasIdent) && st.relkind == "r" {
			problems = append(problems, Problem{
				Key: key,
				What: fmt.Sprintf("table %s has no primary key and its replica identity (%s) does not identify rows: "+
					"publishing it would make the application's UPDATE and DELETE on it fail", st.name, identityName(st.replident)),
				Fix: "add a primary key, or run: " + full,
			})
		}
		for _, l := range st.leaves {
			if l.replident == "n" {
				problems = append(problems, Problem{
					Key:  key,
					What: fmt.Sprintf("partition %s of %s has REPLICA IDENTITY NOTHING", l.sql, st.name),
					Fix:  fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", l.sql),
				})
			}
		}
	}
	return problems, fixes
}

// ownershipProblem: adding a table to a publication needs ownership.
func (st tableState) ownershipProblem() *Problem {
	if !st.exists || st.owner {
		return nil
	}
	return &Problem{
		Key:  fmt.Sprintf("database.tables[%d]", st.index),
		What: fmt.Sprintf("the current role does not own table %s: adding it to the publication needs ownership", st.name),
		Fix:  fmt.Sprintf("connect as the owner, or run: ALTER TABLE %s OWNER TO <snorky role>;", st.sql),
	}
}

func identityName(ri string) string {
	switch ri {
	case "d":
		return "DEFAULT"
	case "n":
		return "NOTHING"
	case "f":
		return "FULL"
	case "i":
		return "USING INDEX"
	}
	return ri
}

// CheckTables verifies the configured tables before streaming (R5): each
// exists and is a table; with replica identity full it sets REPLICA
// IDENTITY FULL where missing (on partitions too); with default it refuses a
// table whose replica identity does not identify rows. A failure is an
// ErrPrerequisite error that names the table, why, and the SQL to run.
func CheckTables(ctx context.Context, conn *pgx.Conn, tables []TableConfig) error {
	states, err := inspectTables(ctx, conn, tables)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range states {
		problems, fixes := st.problems()
		for _, p := range problems {
			errs = append(errs, prerequisite("%s", p))
		}
		if len(problems) > 0 {
			continue
		}
		for _, sql := range fixes {
			if _, err := conn.Exec(ctx, sql); err != nil {
				errs = append(errs, prerequisite("database.tables[%d]: setting REPLICA IDENTITY FULL on %s: %v; run as the table's owner: %s",
					st.index, st.name, err, sql))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// ensurePublication makes the publication cover exactly the tables, with
// publish_via_partition_root and no column lists or row filters.
func ensurePublication(ctx context.Context, conn *pgx.Conn, cfg Config) error {
	pub := pgx.Identifier{cfg.Publication}.Sanitize()
	var want []string
	var wantOIDs []uint32
	for i, t := range cfg.Tables {
		schema, name, err := SplitTableName(t.Name)
		if err != nil {
			return prerequisite("database.tables[%d]: %v", i, err)
		}
		q := pgx.Identifier{schema, name}.Sanitize()
		var oid uint32
		if err := conn.QueryRow(ctx, "SELECT coalesce(to_regclass($1)::oid, 0)", q).Scan(&oid); err != nil {
			return fmt.Errorf("resolving table %s: %w", q, err)
		}
		if oid == 0 {
			return prerequisite("database.tables[%d]: table %s.%s does not exist", i, schema, name)
		}
		want = append(want, q)
		wantOIDs = append(wantOIDs, oid)
	}
	var allTables, viaRoot, ins, upd, del, trunc bool
	err := conn.QueryRow(ctx, `SELECT puballtables, pubviaroot, pubinsert, pubupdate, pubdelete, pubtruncate
		FROM pg_publication WHERE pubname = $1`, cfg.Publication).Scan(&allTables, &viaRoot, &ins, &upd, &del, &trunc)
	if errors.Is(err, pgx.ErrNoRows) {
		sql := "CREATE PUBLICATION " + pub
		if len(want) > 0 {
			sql += " FOR TABLE " + strings.Join(want, ", ")
		}
		sql += " WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)"
		if _, err := conn.Exec(ctx, sql); err != nil {
			return classifySetup(fmt.Errorf("creating publication (%s): %w", sql, err))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading publication %s: %w", cfg.Publication, err)
	}
	if allTables {
		return prerequisite("database.publication: publication %q is FOR ALL TABLES; drop it (DROP PUBLICATION %s;) and let snorky create it, or name another publication", cfg.Publication, pub)
	}
	var have []uint32
	var filtered bool
	rows, err := conn.Query(ctx, `SELECT r.prrelid, r.prattrs IS NOT NULL OR r.prqual IS NOT NULL
		FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid WHERE p.pubname = $1`, cfg.Publication)
	if err != nil {
		return fmt.Errorf("reading publication %s: %w", cfg.Publication, err)
	}
	for rows.Next() {
		var oid uint32
		var f bool
		if err := rows.Scan(&oid, &f); err != nil {
			rows.Close()
			return err
		}
		have = append(have, oid)
		filtered = filtered || f
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var schemas int
	_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication_namespace n JOIN pg_publication p ON p.oid = n.pnpubid WHERE p.pubname = $1`, cfg.Publication).Scan(&schemas)
	slices.Sort(have)
	sortedWant := slices.Clone(wantOIDs)
	slices.Sort(sortedWant)
	if !slices.Equal(have, sortedWant) || filtered || schemas > 0 {
		var sql string
		switch {
		case len(want) > 0:
			sql = "ALTER PUBLICATION " + pub + " SET TABLE " + strings.Join(want, ", ")
		default:
			var drop []string
			for _, oid := range have {
				var q string
				if err := conn.QueryRow(ctx, "SELECT $1::oid::regclass::text", oid).Scan(&q); err != nil {
					return err
				}
				drop = append(drop, q)
			}
			if len(drop) > 0 {
				sql = "ALTER PUBLICATION " + pub + " DROP TABLE " + strings.Join(drop, ", ")
			}
		}
		if sql != "" {
			if _, err := conn.Exec(ctx, sql); err != nil {
				return classifySetup(fmt.Errorf("updating publication (%s): %w", sql, err))
			}
		}
	}
	if !viaRoot || !ins || !upd || !del || !trunc {
		sql := "ALTER PUBLICATION " + pub + " SET (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)"
		if _, err := conn.Exec(ctx, sql); err != nil {
			return classifySetup(fmt.Errorf("updating publication (%s): %w", sql, err))
		}
	}
	return nil
}

// slotState is a row of pg_replication_slots.
type slotState struct {
	exists    bool
	plugin    string
	database  string
	active    bool
	walStatus string
	temporary bool
}

func readSlot(ctx context.Context, conn *pgx.Conn, slot string) (slotState, error) {
	var s slotState
	var plugin, database, walStatus *string
	err := conn.QueryRow(ctx, `SELECT plugin, database, active, wal_status, temporary
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&plugin, &database, &s.active, &walStatus, &s.temporary)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading slot %s: %w", slot, err)
	}
	s.exists = true
	for dst, src := range map[*string]*string{&s.plugin: plugin, &s.database: database, &s.walStatus: walStatus} {
		if src != nil {
			*dst = *src
		}
	}
	return s, nil
}

// ensureSlot creates the permanent pgoutput slot when absent and checks an
// existing one.
func ensureSlot(ctx context.Context, sqlConn *pgx.Conn, repl *pgconn.PgConn, cfg Config) (created bool, err error) {
	s, err := readSlot(ctx, sqlConn, cfg.Slot)
	if err != nil {
		return false, err
	}
	if s.exists {
		var db string
		if err := sqlConn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
			return false, err
		}
		switch {
		case s.plugin != "pgoutput":
			return false, prerequisite("database.slot: slot %q uses plugin %q, not pgoutput; drop it (SELECT pg_drop_replication_slot('%s');) or name another slot", cfg.Slot, s.plugin, cfg.Slot)
		case s.database != db:
			return false, prerequisite("database.slot: slot %q belongs to database %q, not %q; name another slot", cfg.Slot, s.database, db)
		case s.walStatus == "lost":
			return false, fmt.Errorf("%w: slot %q has wal_status lost (it fell behind max_slot_wal_keep_size); "+
				"drop it (SELECT pg_drop_replication_slot('%s');) to start afresh: changes made meanwhile were not delivered", ErrSlotInvalidated, cfg.Slot, cfg.Slot)
		}
		return false, nil
	}
	_, err = pglogrepl.CreateReplicationSlot(ctx, repl, cfg.Slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode:           pglogrepl.LogicalReplication,
		SnapshotAction: "NOEXPORT_SNAPSHOT",
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" { // created meanwhile by another server
			return false, nil
		}
		return false, classifySetup(fmt.Errorf("creating replication slot %s: %w", cfg.Slot, err))
	}
	return true, nil
}

// classifySetup marks errors that retrying cannot fix as ErrPrerequisite.
func classifySetup(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if invalidatedError(pgErr) {
			return fmt.Errorf("%w: %w", ErrSlotInvalidated, err)
		}
		switch pgErr.Code {
		case "42501", "28000", "28P01", "55000", "22023", "42704", "42P01":
			return fmt.Errorf("%w: %w", ErrPrerequisite, err)
		case "55006":
			return fmt.Errorf("%w: %w", ErrSlotInUse, err)
		}
	}
	return err
}

// streamEpoch returns the stream's epoch from snorky.stream, recording a new
// random one when the slot was just created (or when the row is missing:
// the schema was migrated after the slot was made). Without the snorky
// schema it returns "" and no error.
func streamEpoch(ctx context.Context, conn *pgx.Conn, slot string, created bool) (string, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('snorky.stream') IS NOT NULL`).Scan(&exists); err != nil {
		return "", fmt.Errorf("looking for snorky.stream: %w", err)
	}
	if !exists {
		return "", nil
	}
	fresh := newEpoch()
	upsert := `INSERT INTO snorky.stream (slot, epoch) VALUES ($1, $2) ON CONFLICT (slot) DO NOTHING`
	if created {
		upsert = `INSERT INTO snorky.stream (slot, epoch) VALUES ($1, $2)
			ON CONFLICT (slot) DO UPDATE SET epoch = EXCLUDED.epoch, created_at = now()`
	}
	if _, err := conn.Exec(ctx, upsert, slot, fresh); err != nil {
		return "", fmt.Errorf("recording the epoch of slot %s: %w", slot, err)
	}
	var epoch string
	if err := conn.QueryRow(ctx, `SELECT epoch FROM snorky.stream WHERE slot = $1`, slot).Scan(&epoch); err != nil {
		return "", fmt.Errorf("reading the epoch of slot %s: %w", slot, err)
	}
	return epoch, nil
}

// newEpoch returns 16 random lower-case hex digits.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
