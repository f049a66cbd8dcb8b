package main

import (
	"strings"
	"testing"
	"time"
)

// database.dead_link_timeout reaches the reader; its default follows
// status_interval; a value too short to tell a live link is refused, the
// error naming the key.
func TestDeadLinkTimeoutConfig(t *testing.T) {
	for _, tc := range []struct {
		name, database string
		want           time.Duration
		wantErr        string
	}{
		{"default", `{url: "postgres://x/y"}`, 20 * time.Second, ""},
		{"default follows status_interval", `{url: "postgres://x/y", status_interval: 10s}`, 40 * time.Second, ""},
		{"set", `{url: "postgres://x/y", dead_link_timeout: 45s}`, 45 * time.Second, ""},
		{"too short", `{url: "postgres://x/y", dead_link_timeout: 9s}`, 0, "database.dead_link_timeout"},
		{"negative", `{url: "postgres://x/y", dead_link_timeout: -1s}`, 0, "database.dead_link_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := loadConfig(writeConfig(t, mergeYAML(baseConfig, "database: "+tc.database+"\n")), nil)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := cfg.cdcConfig()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cc.WithDefaults().ReceiveTimeout; got != tc.want {
				t.Fatalf("dead-link timeout: got %v, want %v", got, tc.want)
			}
		})
	}
}
