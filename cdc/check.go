package cdc

import (
	"context"
	"fmt"
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

// Check inspects the database for what the reader needs, changing nothing,
// and returns every problem it finds, each with its fix. It looks at the
// configuration, the connection, the server's settings and the role's
// privileges (settings.go), the slot (slot.go), the publication
// (publication.go), each table (tables.go) and the columns the rest of the
// configuration uses (columns.go). No problems means Run would be able to
// start. `snorky check` prints them; `serve` fails fast on them.
//
// A query that fails ends the inspection: what it would have found is
// unknown, and the problem says so.
func Check(ctx context.Context, cfg Config, uses ...Use) []Problem {
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
	failed := func(what string, err error) []Problem {
		return append(problems, Problem{"database.url", fmt.Sprintf("%s: %v", what, err), "check the connection and the role's privileges"})
	}
	srv, ps, err := checkSettings(ctx, conn)
	if err != nil {
		return failed("reading server settings", err)
	}
	problems = append(problems, ps...)
	ps, err = checkSlot(ctx, conn, cfg.Slot, srv)
	if err != nil {
		return failed("reading replication slots", err)
	}
	problems = append(problems, ps...)
	pub, ps, err := checkPublication(ctx, conn, cfg.Publication, srv)
	if err != nil {
		return failed("reading publications", err)
	}
	problems = append(problems, ps...)
	states, err := inspectTables(ctx, conn, cfg.Tables)
	if err != nil {
		return failed("inspecting tables", err)
	}
	for _, st := range states {
		ps, _ := st.problems()
		problems = append(problems, ps...)
		if p := st.ownershipProblem(); p != nil && !pub.tables[st.oid] {
			problems = append(problems, *p)
		}
	}
	return append(problems, CheckUses(ctx, conn, uses)...)
}
