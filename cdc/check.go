package cdc

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// Problem is one unmet prerequisite: what is wrong and how to fix it.
type Problem struct {
	// Key is the configuration key concerned, e.g. "database.tables[0]",
	// or "database.url" for the server as a whole.
	Key  string
	What string
	Fix  string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s: %s (fix: %s)", p.Key, p.What, p.Fix)
}

// Check inspects the database for what the reader needs, changing nothing:
// the configuration, the connection, wal_level, the REPLICATION privilege,
// replication slots, the slot and publication if they exist, and each table
// (existence, key, replica identity, ownership). It returns no problems when
// Run would be able to start. `snorky check` prints them; `serve` fails fast
// on them.
func Check(ctx context.Context, cfg Config) []Problem {
	if err := cfg.Validate(); err != nil {
		return []Problem{{Key: "database", What: err.Error(), Fix: "correct the configuration"}}
	}
	cfg = cfg.withDefaults()
	conn, err := connectSQL(ctx, cfg)
	if err != nil {
		if p, ok := ConnectProblem(err, cfg.URL); ok {
			return []Problem{p}
		}
		return []Problem{{Key: "database.url", What: err.Error(), Fix: "check database.url, that PostgreSQL is running, and pg_hba.conf"}}
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var problems []Problem
	add := func(key, what, fix string) { problems = append(problems, Problem{key, what, fix}) }
	queryFailed := func(what string, err error) []Problem {
		return append(problems, Problem{"database.url", fmt.Sprintf("%s: %v", what, err), "check the connection and the role's privileges"})
	}

	var walLevel, maxSlots, maxSenders, role, db string
	var super, repl, createDB bool
	err = conn.QueryRow(ctx, `SELECT current_setting('wal_level'), current_setting('max_replication_slots'),
		current_setting('max_wal_senders'), current_user, current_database(), r.rolsuper, r.rolreplication,
		has_database_privilege(current_database(), 'CREATE')
		FROM pg_roles r WHERE r.rolname = current_user`).
		Scan(&walLevel, &maxSlots, &maxSenders, &role, &db, &super, &repl, &createDB)
	if err != nil {
		return queryFailed("reading server settings", err)
	}
	if walLevel != "logical" {
		add("database.url", fmt.Sprintf("wal_level is %q: logical replication needs wal_level = logical", walLevel),
			"run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (or set wal_level = logical in postgresql.conf)")
	}
	if n, _ := strconv.Atoi(maxSlots); n == 0 {
		add("database.url", "max_replication_slots is 0", "run ALTER SYSTEM SET max_replication_slots = 10; then restart PostgreSQL")
	}
	if n, _ := strconv.Atoi(maxSenders); n == 0 {
		add("database.url", "max_wal_senders is 0", "run ALTER SYSTEM SET max_wal_senders = 10; then restart PostgreSQL")
	}
	if !super && !repl {
		add("database.url", fmt.Sprintf("role %q has neither REPLICATION nor superuser: it cannot stream changes", role),
			fmt.Sprintf("run as a superuser: ALTER ROLE %s REPLICATION;", pgx.Identifier{role}.Sanitize()))
	}

	slot, err := readSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return queryFailed("reading replication slots", err)
	}
	if slot.exists {
		switch {
		case slot.plugin != "pgoutput":
			add("database.slot", fmt.Sprintf("slot %q uses plugin %q, not pgoutput", cfg.Slot, slot.plugin),
				fmt.Sprintf("SELECT pg_drop_replication_slot('%s'); or name another slot", cfg.Slot))
		case slot.database != db:
			add("database.slot", fmt.Sprintf("slot %q belongs to database %q, not %q", cfg.Slot, slot.database, db), "name another slot")
		case slot.walStatus == "lost":
			add("database.slot", fmt.Sprintf("slot %q was invalidated (wal_status lost): changes were lost", cfg.Slot),
				"snorky serve drops it and creates it afresh with a new epoch (clients must refetch); to prevent it, raise max_slot_wal_keep_size")
		}
	} else if n, _ := strconv.Atoi(maxSlots); n > 0 {
		var used int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots").Scan(&used); err == nil && used >= n {
			add("database.slot", fmt.Sprintf("all %d replication slots are in use, so slot %q cannot be created", n, cfg.Slot),
				"drop unused slots (SELECT pg_drop_replication_slot(name)) or raise max_replication_slots")
		}
	}

	var pubExists, allTables, pubOwner bool
	err = conn.QueryRow(ctx, `SELECT true, puballtables, pg_has_role(pubowner, 'USAGE') FROM pg_publication WHERE pubname = $1`,
		cfg.Publication).Scan(&pubExists, &allTables, &pubOwner)
	if err != nil && err != pgx.ErrNoRows {
		return queryFailed("reading publications", err)
	}
	pub := pgx.Identifier{cfg.Publication}.Sanitize()
	switch {
	case !pubExists && !createDB:
		add("database.publication", fmt.Sprintf("publication %q does not exist and role %q may not create it (no CREATE on database %q)", cfg.Publication, role, db),
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;", pgx.Identifier{db}.Sanitize(), pgx.Identifier{role}.Sanitize()))
	case pubExists && allTables:
		add("database.publication", fmt.Sprintf("publication %q is FOR ALL TABLES and cannot be narrowed to the configured tables", cfg.Publication),
			fmt.Sprintf("DROP PUBLICATION %s; or name another publication", pub))
	case pubExists && !pubOwner:
		add("database.publication", fmt.Sprintf("publication %q is owned by another role, so snorky cannot keep it equal to the configured tables", cfg.Publication),
			fmt.Sprintf("ALTER PUBLICATION %s OWNER TO %s;", pub, pgx.Identifier{role}.Sanitize()))
	}

	states, err := inspectTables(ctx, conn, cfg.Tables)
	if err != nil {
		return queryFailed("inspecting tables", err)
	}
	inPub := make(map[uint32]bool)
	if pubExists {
		rows, err := conn.Query(ctx, `SELECT r.prrelid FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid WHERE p.pubname = $1`, cfg.Publication)
		if err == nil {
			for rows.Next() {
				var oid uint32
				if rows.Scan(&oid) == nil {
					inPub[oid] = true
				}
			}
			rows.Close()
		}
	}
	for _, st := range states {
		ps, _ := st.problems()
		problems = append(problems, ps...)
		if p := st.ownershipProblem(); p != nil && !inPub[st.oid] {
			problems = append(problems, *p)
		}
	}
	return problems
}
