package cdc

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Use is a configuration key's use of a table's columns, checked against
// the catalog: a model's key and columns, a dealer's key column.
type Use struct {
	// Key is the configuration key problems name, e.g. "models.todo.columns".
	Key string
	// Table is the table, as in TableConfig.Name.
	Table string
	// Columns must exist in the table.
	Columns []string
	// NeedsPrimaryKey: the use identifies rows by the table's primary key
	// (the configuration names no key), so the table must have one.
	NeedsPrimaryKey bool
}

// CheckUses reports the columns uses name that the tables do not have, and
// the tables without a primary key that one needs. A table that does not
// exist is not reported here: the table checks report it.
func CheckUses(ctx context.Context, conn *pgx.Conn, uses []Use) []Problem {
	var problems []Problem
	columns := map[string][]string{} // table → its columns; nil: absent
	for _, u := range uses {
		schema, table, err := SplitTableName(u.Table)
		if err != nil {
			continue // reported by the configuration checks
		}
		names, seen := columns[u.Table]
		if !seen {
			rows, err := conn.Query(ctx, `SELECT a.attname FROM pg_attribute a
				JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
				ORDER BY a.attnum`, schema, table)
			if err == nil {
				names, err = pgx.CollectRows(rows, pgx.RowTo[string])
			}
			if err != nil {
				problems = append(problems, Problem{u.Key, fmt.Sprintf("reading the columns of %s: %v", u.Table, err), "check the connection and the role's privileges"})
				continue
			}
			columns[u.Table] = names
		}
		if len(names) == 0 {
			continue // absent: the table checks report it
		}
		for _, c := range u.Columns {
			if !slices.Contains(names, c) {
				problems = append(problems, Problem{u.Key, fmt.Sprintf("column %q does not exist in %s", c, u.Table), "use one of: " + strings.Join(names, ", ")})
			}
		}
		if u.NeedsPrimaryKey {
			if p := primaryKeyProblem(ctx, conn, u, schema, table, names); p != nil {
				problems = append(problems, *p)
			}
		}
	}
	return problems
}

// primaryKeyProblem reports a table without a primary key whose rows u
// identifies by it: deltas need a key that identifies a row.
func primaryKeyProblem(ctx context.Context, conn *pgx.Conn, u Use, schema, table string, names []string) *Problem {
	var hasPK bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_constraint k
		JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND k.contype = 'p')`, schema, table).Scan(&hasPK)
	if err != nil || hasPK {
		return nil
	}
	col := "COLUMN"
	if slices.Contains(names, "id") {
		col = "id"
	}
	return &Problem{
		Key:  u.Key,
		What: fmt.Sprintf("table %s.%s has no primary key and %s is not set: deltas need a key that identifies a row", schema, table, u.Key),
		Fix:  fmt.Sprintf("add one: ALTER TABLE %s ADD PRIMARY KEY (%s); or set %s: [%s] to columns that identify a row", pgx.Identifier{schema, table}.Sanitize(), col, u.Key, col),
	}
}
