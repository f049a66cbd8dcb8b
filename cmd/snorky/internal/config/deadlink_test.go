package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
)

// database.dead_link_timeout reaches the reader; a value too short to tell
// a live link is refused, the error naming the key. (Its default, 4 ×
// status_interval, is the reader's and tested in cdc.)
func TestDeadLinkTimeoutConfig(t *testing.T) {
	for _, tc := range []struct {
		name, database string
		want           time.Duration
		wantErr        string
	}{
		{"default", `{url: "postgres://x/y"}`, 0, ""},
		{"set", `{url: "postgres://x/y", dead_link_timeout: 45s}`, 45 * time.Second, ""},
		{"too short", `{url: "postgres://x/y", dead_link_timeout: 9s}`, 0, "database.dead_link_timeout"},
		{"negative", `{url: "postgres://x/y", dead_link_timeout: -1s}`, 0, "database.dead_link_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := config.Load(writeConfig(t, baseConfig+"database: "+tc.database+"\n"), nil)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := cfg.CDCConfig()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cc.ReceiveTimeout != tc.want {
				t.Fatalf("dead-link timeout: got %v, want %v", cc.ReceiveTimeout, tc.want)
			}
		})
	}
}
