package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// badSetup is a database the server cannot stream from, with the words
// that the error must contain: what is wrong and the fix.
type badSetup struct {
	name string
	// setup returns the server configuration.
	setup func(t *testing.T) serverConfig
	// words must all appear (case-insensitive) in serve's and check's
	// output.
	words []string
	// serveBug, when set, describes a known bug: serve's output lacks
	// words (knownBug).
	serveBug string
}

const tableModels = `models:
  Thing: {table: things}
dealers:
  AllThings: {model: Thing, kind: broadcast}
`

// thingsDatabase is a fresh database on adminURL with the things table.
func thingsDatabase(t *testing.T, adminURL string) string {
	t.Helper()
	u := pgtest.NewDatabaseAt(t, adminURL)
	db := dbConnect(t, u)
	mustExec(t, db, `CREATE TABLE things (id int PRIMARY KEY, name text)`)
	return u
}

var badSetups = []badSetup{
	{
		name: "wal_level replica",
		setup: func(t *testing.T) serverConfig {
			pg := pgtest.StartTB(t, pglocal.Options{WALLevel: "replica"})
			return serverConfig{DatabaseURL: thingsDatabase(t, pg.URL("postgres")), Slot: randomName("e2e_wal_"), Body: tableModels}
		},
		words: []string{"wal_level", "logical", "ALTER SYSTEM"},
	},
	{
		name: "missing table",
		setup: func(t *testing.T) serverConfig {
			return serverConfig{DatabaseURL: thingsDatabase(t, pgtest.AdminURL(t)), Slot: randomName("e2e_missing_"), Body: `models:
  Thing: {table: things}
  Gone: {table: public.no_such_table}
dealers:
  AllThings: {model: Thing, kind: broadcast}
  AllGone: {model: Gone, kind: broadcast}
`}
		},
		words: []string{"no_such_table", "does not exist", "create table"},
	},
	{
		name: "role without REPLICATION",
		setup: func(t *testing.T) serverConfig {
			admin := pgtest.AdminURL(t)
			role := randomName("e2e_norepl_")
			adb := dbConnect(t, admin)
			mustExec(t, adb, fmt.Sprintf(`CREATE ROLE %s LOGIN NOREPLICATION NOSUPERUSER`, role))
			// Registered before the database, so it runs after the drop.
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				c, err := pgx.Connect(ctx, admin)
				if err != nil {
					t.Errorf("dropping role %s: %v", role, err)
					return
				}
				defer c.Close(ctx)
				if _, err := c.Exec(ctx, `DROP ROLE IF EXISTS `+role); err != nil {
					t.Errorf("dropping role %s: %v", role, err)
				}
			})
			dbURL := thingsDatabase(t, admin)
			db := dbConnect(t, dbURL)
			var name string
			if err := db.QueryRow(t.Context(), `SELECT current_database()`).Scan(&name); err != nil {
				t.Fatal(err)
			}
			mustExec(t, db, fmt.Sprintf(`ALTER TABLE things OWNER TO %s; GRANT CREATE ON DATABASE %s TO %s`, role, pgx.Identifier{name}.Sanitize(), role))
			u, err := url.Parse(dbURL)
			if err != nil {
				t.Fatal(err)
			}
			u.User = url.User(role)
			return serverConfig{DatabaseURL: u.String(), Slot: randomName("e2e_norepl_"), Body: tableModels}
		},
		words: []string{"REPLICATION", "ALTER ROLE"},
	},
}

// containsAll reports the words missing from out (case-insensitive).
func missingWords(out string, words []string) []string {
	var missing []string
	for _, w := range words {
		if !strings.Contains(strings.ToLower(out), strings.ToLower(w)) {
			missing = append(missing, w)
		}
	}
	return missing
}

// TestServeExplainsBadSetup: `snorky serve` against a database it cannot
// stream from exits non-zero (or, at least, never becomes ready and says
// why in its log) with a message that names the fix.
func TestServeExplainsBadSetup(t *testing.T) {
	for _, bs := range badSetups {
		t.Run(bs.name, func(t *testing.T) {
			p := startServer(t, bs.setup(t))
			exited := true
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				exited = false
			}
			out := p.log.String()
			if exited {
				if p.err == nil {
					t.Fatalf("serve exited with status 0, want non-zero; output:\n%s", out)
				}
			} else {
				if st := p.readyStatus(); st == http.StatusOK {
					t.Fatalf("serve became ready against a bad setup")
				}
				t.Logf("serve did not exit within 30s (it keeps retrying); /readyz is not ready")
			}
			t.Logf("serve (exited: %v, %v):\n%s", exited, p.err, tail(out, 1500))
			if missing := missingWords(out, bs.words); len(missing) > 0 {
				if bs.serveBug != "" {
					knownBug(t, "%s (output lacks %q)", bs.serveBug, missing)
				}
				t.Errorf("serve's output lacks %q; output:\n%s", missing, out)
			}
		})
	}
}

// TestCheckExplainsBadSetup: `snorky check --config` prints each problem
// with its fix and exits non-zero; on a good setup it prints ok.
func TestCheckExplainsBadSetup(t *testing.T) {
	for _, bs := range badSetups {
		t.Run(bs.name, func(t *testing.T) {
			path, _, _ := writeConfig(t, bs.setup(t))
			out, code := runCommand(t, 60*time.Second, "check", "--config", path)
			if code == 0 {
				t.Errorf("check exited with status 0, want non-zero; output:\n%s", out)
			}
			if !strings.Contains(out, "fix:") {
				t.Errorf("check's output has no \"fix:\" line:\n%s", out)
			}
			if missing := missingWords(out, bs.words); len(missing) > 0 {
				t.Errorf("check's output lacks %q; output:\n%s", missing, out)
			}
			t.Logf("check (status %d):\n%s", code, out)
		})
	}
	t.Run("good setup", func(t *testing.T) {
		cfg := serverConfig{DatabaseURL: thingsDatabase(t, pgtest.AdminURL(t)), Slot: randomName("e2e_good_"), Body: tableModels}
		path, _, _ := writeConfig(t, cfg)
		out, code := runCommand(t, 60*time.Second, "check", "--config", path)
		if code != 0 || !strings.HasPrefix(out, "ok") {
			t.Errorf("check on a good setup: status %d, output:\n%s\nwant status 0 and a line starting with ok", code, out)
		}
		t.Logf("check (status %d): %s", code, out)
	})
}
