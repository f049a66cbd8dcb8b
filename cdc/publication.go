package cdc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

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

// pubState is what Check learns of the publication.
type pubState struct {
	exists bool
	tables map[uint32]bool // the OIDs of the tables it publishes
}

// checkPublication reports what keeps the reader from keeping the
// publication equal to the configured tables: no right to create it, FOR
// ALL TABLES, or another owner.
func checkPublication(ctx context.Context, conn *pgx.Conn, name string, srv serverState) (pubState, []Problem, error) {
	st := pubState{tables: map[uint32]bool{}}
	var allTables, owner bool
	err := conn.QueryRow(ctx, `SELECT true, puballtables, pg_has_role(pubowner, 'USAGE') FROM pg_publication WHERE pubname = $1`,
		name).Scan(&st.exists, &allTables, &owner)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return st, nil, err
	}
	pub, role := pgx.Identifier{name}.Sanitize(), pgx.Identifier{srv.role}.Sanitize()
	var problems []Problem
	switch {
	case !st.exists && !srv.createDB:
		problems = append(problems, Problem{"database.publication", fmt.Sprintf("publication %q does not exist and role %q may not create it (no CREATE on database %q)", name, srv.role, srv.database),
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;", pgx.Identifier{srv.database}.Sanitize(), role)})
	case st.exists && allTables:
		problems = append(problems, Problem{"database.publication", fmt.Sprintf("publication %q is FOR ALL TABLES and cannot be narrowed to the configured tables", name),
			fmt.Sprintf("DROP PUBLICATION %s; or name another publication", pub)})
	case st.exists && !owner:
		problems = append(problems, Problem{"database.publication", fmt.Sprintf("publication %q is owned by another role, so snorky cannot keep it equal to the configured tables", name),
			fmt.Sprintf("ALTER PUBLICATION %s OWNER TO %s;", pub, role)})
	}
	if st.exists {
		rows, err := conn.Query(ctx, `SELECT r.prrelid FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid WHERE p.pubname = $1`, name)
		if err != nil {
			return st, nil, err
		}
		oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
		if err != nil {
			return st, nil, err
		}
		for _, oid := range oids {
			st.tables[oid] = true
		}
	}
	return st, problems, nil
}
