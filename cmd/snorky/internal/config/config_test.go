package config_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
	snorky "github.com/snorkyhq/snorky/cmd/snorky/internal/server"
)

// baseConfig is a configuration on loopback with free ports (without a
// frontend section, which tests add).
const baseConfig = `
backend: {listen: "127.0.0.1:0", path: /backend, api_key: "test-backend-key-0123456789abcdef"}
tokens: {secret: "test-secret-0123456789abcdefghijklm"}
limits: {commands_per_second: 0}
log: {level: warn}
`

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigLayers(t *testing.T) {
	p := writeConfig(t, baseConfig+"frontend: {listen: \"127.0.0.1:0\", ping_interval: 5s, send_queue_bytes: 2MiB}\n")
	cfg, warnings, err := config.Load(p, []string{
		"SNORKY_BACKEND__API_KEY=from-env",
		"SNORKY_FRONTEND__ALLOWED_ORIGINS=https://a.example,https://b.example",
		"SNORKY_NO_SUCH__KEY=1",
		"SNORKY_TEST_DATABASE_URL=postgres://x",
		"SNORKY_BENCH_E2E=1",
		"OTHER=1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Backend.APIKey != "from-env" {
		t.Errorf("api_key: got %q, want the environment's", cfg.Backend.APIKey)
	}
	if got := strings.Join(cfg.Frontend.AllowedOrigins, " "); got != "https://a.example https://b.example" {
		t.Errorf("allowed_origins: got %q", got)
	}
	if cfg.Frontend.PingInterval != 5*time.Second || cfg.Frontend.SendQueueBytes != 2<<20 || cfg.Frontend.Path != "/ws" {
		t.Errorf("file and defaults: got %+v", cfg.Frontend)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "SNORKY_NO_SUCH__KEY") {
		t.Errorf("warnings: got %v, want one about SNORKY_NO_SUCH__KEY", warnings)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"frontend: {lisen: x}", "unknown key frontend.lisen"},
		{"fronted: {}", "unknown key fronted"},
		{"models: {Task: {tabel: t}}", "unknown key models.Task.tabel"},
		{"frontend: {max_message_bytes: lots}", "max_message_bytes"},
		{"frontend: {ping_interval: soon}", "ping_interval"},
		{"limits: {commands_per_second: fast}", "commands_per_second"},
	} {
		_, _, err := config.Load(writeConfig(t, tc.yaml), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.yaml, err, tc.want)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{"backend: {api_key: backend-key-0123456789abcdefghijk}\ntokens: {secret: secret-0123456789abcdefghijklmnopq}", ""},
		{"tokens: {secret: secret-0123456789abcdefghijklmnopq}", "backend.api_key"},
		{"backend: {api_key: backend-key-0123456789abcdefghijk}", "tokens.secret"},
		{"backend: {api_key: backend-key-0123456789abcdefghijk}\ntokens: {secret: short}", "tokens.secret"},
		{"backend: {api_key: backend-key-0123456789abcdefghijk}\ntokens: {secret: secret-0123456789abcdefghijklmnopq}\nservices: {chat: pubsub}", "services.pubsub"},
		{"backend: {api_key: backend-key-0123456789abcdefghijk}\ntokens: {secret: secret-0123456789abcdefghijklmnopq}\npubsub: {client_publish: 3}", "pubsub.client_publish"},
		{"backend: {api_key: backend-key-0123456789abcdefghijk}\ntokens: {secret: secret-0123456789abcdefghijklmnopq}\ndealers: {D: {model: Nope, kind: broadcast}}", "dealers.D.model"},
		{"backend: {api_key: backend-key-0123456789abcdefghijk}\ntokens: {secret: secret-0123456789abcdefghijklmnopq}\nmodels: {T: {}}\ndealers: {D: {model: T, kind: simple}}", "dealers.D.key"},
		{"backend: {api_key: backend-key-0123456789abcdefghijk}\ntokens: {secret: secret-0123456789abcdefghijklmnopq}\nmodels: {T: {table: t}}", "models.T.table"},
		{"backend: {api_key: backend-key-0123456789abcdefghijk}\ntokens: {secret: secret-0123456789abcdefghijklmnopq}\ndatabase: {url: postgres://x/y, replica_identity: default}\nmodels: {T: {table: t}}\ndealers: {D: {model: T, kind: filter}}", "dealers.D"},
		{"backend: {api_key: backend-key-0123456789abcdefghijk}\ntokens: {secret: secret-0123456789abcdefghijklmnopq}\nfrontend: {allowed_origins: [example.com]}", "frontend.allowed_origins[0]"},
	} {
		cfg, _, err := config.Load(writeConfig(t, tc.yaml), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		_, err = snorky.New(cfg, slog.New(slog.DiscardHandler))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s:\n got %v\nwant an error naming %q", tc.yaml, err, tc.want)
		}
	}
}

// FuzzLoadConfig: whatever the file holds, loading and validating it
// returns an error or a configuration; it never panics.
func FuzzLoadConfig(f *testing.F) {
	for _, s := range []string{
		baseConfig,
		"frontend: {lisen: x}",
		"models: {T: {table: t, key: [id], columns: [id]}}\ndealers: {D: {model: T, kind: simple, key: a.b}}",
		"pubsub: {client_publish: [a, 1]}",
		"database: {url: 'postgres://x', history: {max_bytes: 1GiB}}",
		"frontend: {max_message_bytes: -5KiB}",
		"limits: {commands_per_second: 1e309}",
		"- a\n- b",
		"{",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, yaml []byte) {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, yaml, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, _, err := config.Load(p, nil)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			return
		}
		_ = cfg.ValidateDatabase()
		if cfg.Database != nil {
			_, _ = cfg.CDCConfig()
		}
	})
}

// TestPingIntervalZeroIsOff: spec §1.1 (as in the original Snorky) makes an
// explicit 0 disable pings, so the file must tell it from an unset key,
// which means the default.
func TestPingIntervalZeroIsOff(t *testing.T) {
	for _, c := range []struct {
		frontend string
		want     time.Duration
	}{
		{"{}", 25 * time.Second},
		{"{ping_interval: 0}", 0},
		{"{ping_interval: 0s}", 0},
		{"{ping_interval: 40s}", 40 * time.Second},
	} {
		cfg, _, err := config.Load(writeConfig(t, baseConfig+"frontend: "+c.frontend+"\n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Frontend.PingInterval != c.want {
			t.Errorf("frontend: %s: ping_interval %v, want %v", c.frontend, cfg.Frontend.PingInterval, c.want)
		}
	}
}

// TestLimitsZeroIsNoCap: the limits whose packages read 0 as their default
// have the file's defaults, so that an explicit 0 (no cap) is told apart.
func TestLimitsZeroIsNoCap(t *testing.T) {
	cfg, _, err := config.Load(writeConfig(t, baseConfig), nil)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Limits
	if l.MessageBodyBytes != 16<<10 || l.DocumentBytes != 256 || l.CursorHandleBytes != 256 || l.MembersPerReply != 1000 || l.PendingBytes != 8<<20 {
		t.Errorf("unset: got body %d, document %d, handle %d, members %d, pending %d; want 16KiB, 256, 256, 1000, 8MiB",
			l.MessageBodyBytes, l.DocumentBytes, l.CursorHandleBytes, l.MembersPerReply, l.PendingBytes)
	}
	zero := strings.Replace(baseConfig, "limits: {commands_per_second: 0}", "limits: {commands_per_second: 0, message_body_bytes: 0, document_bytes: 0, cursor_handle_bytes: 0, members_per_reply: 0, pending_bytes: 0}", 1)
	cfg, _, err = config.Load(writeConfig(t, zero), nil)
	if err != nil {
		t.Fatal(err)
	}
	l = cfg.Limits
	if l.MessageBodyBytes != 0 || l.DocumentBytes != 0 || l.CursorHandleBytes != 0 || l.MembersPerReply != 0 || l.PendingBytes != 0 {
		t.Errorf("explicit 0: got %+v", l)
	}
}
