package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

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
