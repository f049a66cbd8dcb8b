package cdc

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func withUser(t *testing.T, raw, user string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(user)
	return u.String()
}

func problemsText(ps []Problem) string {
	var b []string
	for _, p := range ps {
		b = append(b, p.String())
	}
	return strings.Join(b, "\n")
}

func TestCheck(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url,
		`CREATE TABLE tasks (id int PRIMARY KEY, title text)`,
		`CREATE TABLE nokey (v text)`,
		`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'snorky_norepl') THEN CREATE ROLE snorky_norepl LOGIN; END IF; END $$`,
	)
	t.Cleanup(func() { execSQL(t, url, `DROP ROLE IF EXISTS snorky_norepl`) })
	replica := pgtest.StartTB(t, pglocal.Options{WALLevel: "replica"})

	tests := []struct {
		name   string
		cfg    Config
		want   []string // substrings, each in some problem
		wantOK bool
	}{
		{name: "ok", cfg: testConfig(url, "tasks"), wantOK: true},
		{name: "keyless full is fixable", cfg: testConfig(url, "tasks", "nokey"), wantOK: true},
		{name: "wal_level replica", cfg: testConfig(replica.URL("postgres")),
			want: []string{`wal_level is "replica"`, "ALTER SYSTEM SET wal_level = logical"}},
		{name: "missing table", cfg: testConfig(url, "tasks", "app.missing"),
			want: []string{"database.tables[1]: table app.missing does not exist", "create table app.missing"}},
		{name: "no replication privilege", cfg: testConfig(withUser(t, url, "snorky_norepl"), "tasks"),
			want: []string{`role "snorky_norepl" has neither REPLICATION nor superuser`, `ALTER ROLE "snorky_norepl" REPLICATION;`,
				"does not own table public.tasks", "no CREATE on database"}},
		{name: "keyless default", cfg: func() Config {
			c := testConfig(url)
			c.Tables = []TableConfig{{Name: "nokey", ReplicaIdentity: IdentityDefault}}
			return c
		}(), want: []string{"table public.nokey has no primary key", `ALTER TABLE "public"."nokey" REPLICA IDENTITY FULL;`}},
		{name: "bad config", cfg: Config{URL: url, Slot: "Bad-Slot"}, want: []string{"database.slot:"}},
		{name: "unreachable", cfg: Config{URL: "postgres://postgres@127.0.0.1:1/x?connect_timeout=2"}, want: []string{"database.url"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := Check(context.Background(), tc.cfg)
			text := problemsText(ps)
			if tc.wantOK && len(ps) > 0 {
				t.Fatalf("got problems:\n%s\nwant none", text)
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("got problems:\n%s\nwant one containing %q", text, w)
				}
			}
			for _, p := range ps {
				if p.Fix == "" || p.What == "" || p.Key == "" {
					t.Errorf("problem %+v: want Key, What and Fix", p)
				}
			}
		})
	}
}

func TestCheckTables(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url,
		`CREATE TABLE nokey (v text)`,
		`CREATE TABLE parted (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)`,
		`CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10)`,
		`CREATE TABLE keyed (id int PRIMARY KEY)`,
	)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	err = CheckTables(ctx, conn, []TableConfig{{Name: "nokey", ReplicaIdentity: IdentityDefault}, {Name: "keyed", ReplicaIdentity: IdentityDefault}})
	if !errors.Is(err, ErrPrerequisite) || !strings.Contains(err.Error(), `ALTER TABLE "public"."nokey" REPLICA IDENTITY FULL;`) {
		t.Errorf("keyless under default: got %v, want ErrPrerequisite with the ALTER TABLE to run", err)
	}
	if err := CheckTables(ctx, conn, []TableConfig{{Name: "nokey", ReplicaIdentity: IdentityFull}, {Name: "parted", ReplicaIdentity: IdentityFull}}); err != nil {
		t.Fatalf("under full: %v", err)
	}
	for _, tb := range []string{"nokey", "parted", "parted_1"} {
		if got := queryString(t, url, `SELECT relreplident::text FROM pg_class WHERE oid = $1::regclass`, tb); got != "f" {
			t.Errorf("replica identity of %s: got %q, want f", tb, got)
		}
	}
	// The application's UPDATE keeps working once the keyless table is published.
	execSQL(t, url, `INSERT INTO nokey VALUES ('a')`, `CREATE PUBLICATION p FOR TABLE nokey`, `UPDATE nokey SET v = 'b'`)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"defaults", Config{URL: "postgres://localhost/app", Tables: []TableConfig{{Name: "tasks"}}}, ""},
		{"no url", Config{}, "database.url: required"},
		{"bad slot", Config{URL: "postgres://x/y", Slot: "My-Slot"}, "database.slot:"},
		{"bad identity", Config{URL: "postgres://x/y", Tables: []TableConfig{{Name: "t", ReplicaIdentity: "nothing"}}}, "database.tables[0].replica_identity"},
		{"duplicate table", Config{URL: "postgres://x/y", Tables: []TableConfig{{Name: "t"}, {Name: "public.t"}}}, "database.tables[1]: public.t is also database.tables[0]"},
		{"bad name", Config{URL: "postgres://x/y", Tables: []TableConfig{{Name: "a.b.c"}}}, "database.tables[0]"},
		{"bad timezone", Config{URL: "postgres://x/y", TimeZone: "UTC'; DROP"}, "database.timezone"},
		{"receive timeout", Config{URL: "postgres://x/y", StatusInterval: 10e9, ReceiveTimeout: 1e9}, "database.dead_link_timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestSplitTableName(t *testing.T) {
	tests := []struct{ in, schema, table, err string }{
		{"tasks", "public", "tasks", ""},
		{"App.Tasks", "app", "tasks", ""},
		{`"App"."Tasks"`, "App", "Tasks", ""},
		{`"a""b".c`, `a"b`, "c", ""},
		{`"x.y"`, "public", "x.y", ""},
		{"a.", "", "", "missing identifier"},
		{"a b", "", "", "invalid character"},
		{"", "", "", "missing identifier"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			s, tb, err := SplitTableName(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("got %v, want error containing %q", err, tc.err)
				}
				return
			}
			if err != nil || s != tc.schema || tb != tc.table {
				t.Errorf("got %q, %q, %v; want %q, %q", s, tb, err, tc.schema, tc.table)
			}
		})
	}
}
