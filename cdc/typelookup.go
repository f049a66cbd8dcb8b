package cdc

import (
	"context"

	"github.com/jackc/pgx/v5"
)

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
