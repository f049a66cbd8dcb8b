package cdc

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// serverState is what Check learns of the server and the role.
type serverState struct {
	maxSlots int
	role     string
	database string
	createDB bool // the role may create objects (a publication) in the database
}

// checkSettings reports the server settings and role privileges logical
// replication needs: wal_level, replication slots and WAL senders, and
// REPLICATION (or superuser).
func checkSettings(ctx context.Context, conn *pgx.Conn) (serverState, []Problem, error) {
	var s serverState
	var walLevel, maxSlots, maxSenders string
	var super, repl bool
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), current_setting('max_replication_slots'),
		current_setting('max_wal_senders'), current_user, current_database(), r.rolsuper, r.rolreplication,
		has_database_privilege(current_database(), 'CREATE')
		FROM pg_roles r WHERE r.rolname = current_user`).
		Scan(&walLevel, &maxSlots, &maxSenders, &s.role, &s.database, &super, &repl, &s.createDB)
	if err != nil {
		return s, nil, err
	}
	s.maxSlots, _ = strconv.Atoi(maxSlots)
	var problems []Problem
	add := func(what, fix string) { problems = append(problems, Problem{"database.url", what, fix}) }
	if walLevel != "logical" {
		add(fmt.Sprintf("wal_level is %q: logical replication needs wal_level = logical", walLevel),
			"run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (or set wal_level = logical in postgresql.conf)")
	}
	if s.maxSlots == 0 {
		add("max_replication_slots is 0", "run ALTER SYSTEM SET max_replication_slots = 10; then restart PostgreSQL")
	}
	if n, _ := strconv.Atoi(maxSenders); n == 0 {
		add("max_wal_senders is 0", "run ALTER SYSTEM SET max_wal_senders = 10; then restart PostgreSQL")
	}
	if !super && !repl {
		add(fmt.Sprintf("role %q has neither REPLICATION nor superuser: it cannot stream changes", s.role),
			fmt.Sprintf("run as a superuser: ALTER ROLE %s REPLICATION;", pgx.Identifier{s.role}.Sanitize()))
	}
	return s, problems, nil
}
