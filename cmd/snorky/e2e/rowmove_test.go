package e2e

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// rowSummary renders the fields id, owner, status and body of row data
// that are present, body as "full" when it is the big value, "null" when
// null.
func rowSummary(m map[string]any, big string) string {
	var parts []string
	for _, k := range []string{"id", "owner", "status", "body"} {
		v, ok := m[k]
		if !ok {
			continue
		}
		switch {
		case v == nil:
			parts = append(parts, k+"=null")
		case k == "body" && v == big:
			parts = append(parts, k+"=full")
		case k == "body" && len(fmt.Sprint(v)) > 20:
			parts = append(parts, fmt.Sprintf("%s=len(%d)", k, len(fmt.Sprint(v))))
		default:
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	return strings.Join(parts, " ")
}

func deltaSummary(d *delta, big string) string {
	s := d.Type + " " + rowSummary(d.row(), big)
	if d.Type == "update" {
		s += " old(" + rowSummary(d.OldData, big) + ")"
	}
	if d.Unchanged != nil {
		s += fmt.Sprintf(" unchanged=%v", d.Unchanged)
	}
	return s
}

// TestRowImages is R5/T13: a row moving from owner A to owner B reaches
// A's simple-dealer and filter subscriptions as a delete and B's as an
// insert; its DELETE reaches only the subscriptions that could see it; an
// update leaving a 20 KiB STORAGE EXTERNAL (TOASTed) column unchanged
// delivers the value under replica_identity: full, and under
// replica_identity: default leaves it out of newData and lists it in
// "unchanged", never null.
func TestRowImages(t *testing.T) {
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	for _, table := range []string{"docs", "notes"} {
		mustExec(t, db, fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, owner int NOT NULL, status text NOT NULL, body text);
			ALTER TABLE %[1]s ALTER COLUMN body SET STORAGE EXTERNAL`, table))
	}
	slot := randomName("e2e_rows_")
	p := startServer(t, serverConfig{DatabaseURL: url, Slot: slot, Body: `models:
  Doc: {table: docs}
  Note: {table: notes, replica_identity: default}
dealers:
  DocsByOwner: {model: Doc, kind: simple, key: owner}
  DocFilter: {model: Doc, kind: filter}
  AllNotes: {model: Note, kind: broadcast}
`})
	p.waitReady(60 * time.Second)

	subscribe := func(items ...map[string]any) *wsClient {
		c := p.dial()
		c.acquire(p.mustAuthorize(items, ""))
		return c
	}
	clients := []struct {
		name string
		c    *wsClient
		want []string
	}{
		{"A simple", subscribe(item("DocsByOwner", 1)), []string{
			"insert id=1 owner=1 status=new body=full",
			"update id=1 owner=1 status=edited body=full old(id=1 owner=1 status=new body=full)",
			"delete id=1 owner=1 status=edited body=full",
			"insert id=101 owner=1 status=marker body=null",
		}},
		{"A filter", subscribe(item("DocFilter", []any{"==", "owner", 1})), nil}, // as A simple
		{"B simple", subscribe(item("DocsByOwner", 2)), []string{
			"insert id=1 owner=2 status=edited body=full",
			"update id=1 owner=2 status=moved body=full old(id=1 owner=2 status=edited body=full)",
			"delete id=1 owner=2 status=moved body=full",
			"insert id=102 owner=2 status=marker body=null",
		}},
		{"B filter", subscribe(item("DocFilter", []any{"and", []any{"==", "owner", 2}, []any{"!=", "status", "draft"}})), nil}, // as B simple
		{"C simple", subscribe(item("DocsByOwner", 3)), []string{
			"insert id=103 owner=3 status=marker body=null",
		}},
		{"C filter", subscribe(item("DocFilter", []any{"in", "owner", []any{3, 4}})), nil}, // as C simple
		{"notes", subscribe(item("AllNotes", nil)), []string{
			"insert id=1 owner=1 status=new body=full",
			"update id=1 owner=1 status=edited old(id=1) unchanged=[body]",
			"update id=1 owner=1 status=edited body=short old(id=1)",
			"delete id=1",
			"insert id=100 owner=0 status=marker body=null",
		}},
	}
	for i := range clients {
		if clients[i].want == nil {
			clients[i].want = clients[i-1].want
		}
	}

	// 20 KiB of random letters: stored out of line, uncompressed.
	rng := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	for range 20 << 10 {
		b.WriteByte(byte('a' + rng.IntN(26)))
	}
	big := b.String()
	// The first row's body must live in the TOAST table: count its chunks.
	toastChunks := func(table string) int {
		var toast string
		if err := db.QueryRow(t.Context(), `SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = $1::regclass`, table).Scan(&toast); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRow(t.Context(), `SELECT count(*) FROM `+toast).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, sql := range []string{
		`INSERT INTO docs VALUES (1, 1, 'new', $1)`,
		`UPDATE docs SET status = 'edited' WHERE id = 1`,
		`UPDATE docs SET owner = 2 WHERE id = 1`,
		`UPDATE docs SET status = 'moved' WHERE id = 1`,
		`DELETE FROM docs WHERE id = 1`,
		`INSERT INTO docs VALUES (101, 1, 'marker', NULL), (102, 2, 'marker', NULL), (103, 3, 'marker', NULL)`,
		`INSERT INTO notes VALUES (1, 1, 'new', $1)`,
		`UPDATE notes SET status = 'edited' WHERE id = 1`,
		`UPDATE notes SET body = 'short' WHERE id = 1`,
		`DELETE FROM notes WHERE id = 1`,
		`INSERT INTO notes VALUES (100, 0, 'marker', NULL)`,
	} {
		var args []any
		if strings.Contains(sql, "$1") {
			args = append(args, big)
		}
		mustExec(t, db, sql, args...)
		if strings.HasPrefix(sql, "INSERT INTO docs VALUES (1,") || strings.HasPrefix(sql, "INSERT INTO notes VALUES (1,") {
			table := strings.Fields(sql)[2]
			if n := toastChunks(table); n == 0 {
				t.Fatalf("the 20 KiB body of %s is not stored in its TOAST table", table)
			}
		}
	}
	nulls := 0
	for _, cl := range clients {
		ds := cl.c.waitDeltas(len(cl.want), 30*time.Second)
		// The marker is the last change: once it is in, nothing else for
		// this subscription can be on its way.
		var got []string
		for i := range ds {
			got = append(got, deltaSummary(&ds[i], big))
			if strings.Contains(ds[i].Raw, `"body":null`) && ds[i].Model == "Doc" && num(ds[i].row(), "id") == 1 {
				nulls++
			}
			if ds[i].Model == "Note" && num(ds[i].row(), "id") == 1 && strings.Contains(ds[i].Raw, `"body":null`) {
				nulls++
			}
		}
		if g, w := strings.Join(got, "\n"), strings.Join(cl.want, "\n"); g != w {
			t.Errorf("%s:\n got:\n%s\nwant:\n%s", cl.name, g, w)
		}
	}
	if nulls > 0 {
		t.Errorf("%d deltas carry the TOASTed body as null", nulls)
	}
	t.Logf("%d subscriptions: row move A→B seen as delete/insert, DELETE only by its subscribers; 20 KiB EXTERNAL value filled under FULL, marked unchanged under DEFAULT; %d null TOAST values", len(clients), nulls)
}
