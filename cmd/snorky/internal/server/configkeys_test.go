package server_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
	snorky "github.com/snorkyhq/snorky/cmd/snorky/internal/server"
)

// validConfig is a configuration every section of which is valid, with a
// model M on a table and a simple dealer D, so that each key below can be
// made invalid on its own.
func validConfig() map[string]any {
	return map[string]any{
		"frontend": map[string]any{"listen": "127.0.0.1:0"},
		"backend":  map[string]any{"listen": "127.0.0.1:0", "api_key": "test-backend-key-0123456789abcdef"},
		"tokens":   map[string]any{"secret": "test-secret-0123456789abcdefghijklm"},
		"database": map[string]any{"url": "postgres://snorky@127.0.0.1:1/app"},
		"models":   map[string]any{"M": map[string]any{"table": "public.m", "key": []any{"id"}}},
		"dealers":  map[string]any{"D": map[string]any{"model": "M", "kind": "simple", "key": "id"}},
	}
}

// invalid is the invalid value of each key whose type has none in common
// (a string, a list, a value of any type); every other key gets one by its
// type (a negative number or duration).
var invalid = map[string]any{
	"database.url":                   "postgres://[::1",
	"database.slot":                  "Not-A-Slot",
	"database.publication":           strings.Repeat("p", 64),
	"database.timezone":              "Europe/Not A Zone",
	"database.replica_identity":      "sometimes",
	"frontend.listen":                "",
	"frontend.path":                  "ws",
	"frontend.allowed_origins":       []any{"example.com"},
	"frontend.tls.cert_file":         also{"/nonexistent/cert.pem", "frontend.tls.key_file"},
	"frontend.tls.key_file":          also{"/nonexistent/key.pem", "frontend.tls.cert_file"},
	"frontend.sockjs_path":           "sockjs",
	"frontend.static_dir":            "/nonexistent/static",
	"backend.listen":                 "",
	"backend.path":                   "backend",
	"backend.api_key":                "short",
	"backend.tls.cert_file":          also{"/nonexistent/cert.pem", "backend.tls.key_file"},
	"backend.tls.key_file":           also{"/nonexistent/key.pem", "backend.tls.cert_file"},
	"tokens.secret":                  "short",
	"pubsub.client_publish":          3,
	"limits.trusted_proxies":         []any{"not-an-address"},
	"models.M.table":                 "public.bad name",
	"models.M.key":                   []any{""},
	"models.M.columns":               []any{"title"},
	"models.M.replica_identity":      "sometimes",
	"dealers.D.model":                "Nope",
	"dealers.D.kind":                 "weird",
	"dealers.D.key":                  "",
	"log.level":                      "loud",
	"log.format":                     "xml",
	"services.pubsub":                "",
	"services.pubsub_backend":        "",
	"services.messaging":             "",
	"services.datasync":              "",
	"services.datasync_backend":      "",
	"services.chat":                  "",
	"services.cursors":               "",
	"services.identity":              "",
	"services.identity_backend":      "",
	"database.history.max_age":       "-1s",
	"database.history.max_bytes":     -1,
	"frontend.max_message_bytes":     -1,
	"limits.commands_per_second":     -1,
	"limits.channels_per_connection": -1,
	"cluster.name":                   "not a name",
	"cluster.nats.url":               "",
	"cluster.nats.creds_file":        "/nonexistent/user.creds",
	"cluster.nats.tls.ca_file":       "/nonexistent/ca.pem",
	"cluster.nats.tls.cert_file":     also{"/nonexistent/cert.pem", "cluster.nats.tls.key_file"},
	"cluster.nats.tls.key_file":      also{"/nonexistent/key.pem", "cluster.nats.tls.cert_file"},
	"cluster.stream.storage":         "tape",
	"cluster.stream.max_bytes":       -1,
}

// also is an invalid value of a key whose partner key is set to an
// existing file (the TLS certificate and key go together).
type also struct {
	v       any
	partner string
}

// noInvalidValue lists the keys that accept every value of their type,
// each with the reason.
var noInvalidValue = map[string]string{
	"database.migrate":            "a bool",
	"frontend.require_identity":   "a bool",
	"backend.pprof":               "a bool",
	"backend.metrics_auth":        "a bool",
	"pubsub.client_publish_deny":  "any list of prefixes is a policy (an empty prefix denies every channel)",
	"frontend.ping_interval":      "0 or a negative interval disables pings",
	"database.heartbeat_interval": "a negative interval disables heartbeats",
	"limits.idle_timeout":         "a negative timeout disables the idle deadline, as 0 does",
}

// TestEveryConfigKeyErrorNamesIt walks every key of the configuration file
// (by reflection over config.Config), makes it invalid, and checks that the
// error that loading, building or listening returns names that key: the
// operator reads a key the file has, never a package's own name for it.
func TestEveryConfigKeyErrorNamesIt(t *testing.T) {
	keys := leafKeys(reflect.TypeFor[config.Config](), "")
	if len(keys) < 80 {
		t.Fatalf("walked %d keys, want every key of the file (80 or more)", len(keys))
	}
	// The valid configuration is valid.
	if err := build(t, validConfig()); err != nil {
		t.Fatalf("valid configuration: %v", err)
	}
	for _, k := range keys {
		t.Run(k.path, func(t *testing.T) {
			if reason, ok := noInvalidValue[k.path]; ok {
				t.Skipf("no invalid value: %s", reason)
			}
			v, ok := invalid[k.path]
			if !ok {
				v, ok = invalidOfType(k.typ)
			}
			if !ok {
				t.Fatalf("no invalid value for %s (%s): add one to invalid, or to noInvalidValue with the reason", k.path, k.typ)
			}
			m := validConfig()
			if a, ok := v.(also); ok {
				set(m, a.partner, os.Args[0]) // a file that exists
				v = a.v
			}
			set(m, k.path, v)
			err := build(t, m)
			if err == nil {
				t.Fatalf("%s: %v: got no error, want one naming %s", k.path, v, k.path)
			}
			if !strings.Contains(err.Error(), k.path) {
				t.Fatalf("%s: %v:\n got %v\nwant an error naming %s", k.path, v, err, k.path)
			}
		})
	}
}

type key struct {
	path string
	typ  reflect.Type
}

// leafKeys lists the keys under t; maps are walked with the names of
// validConfig (models M, dealers D).
func leafKeys(t reflect.Type, prefix string) []key {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []key
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("koanf")
		if name == "" {
			continue
		}
		path := prefix + name
		ft := f.Type
		for ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, leafKeys(ft, path+".")...)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			sample := map[string]string{"models": "M", "dealers": "D"}[path]
			if sample == "" {
				panic("no sample name for map " + path)
			}
			out = append(out, leafKeys(ft.Elem(), path+"."+sample+".")...)
		default:
			out = append(out, key{path, f.Type})
		}
	}
	return out
}

// invalidOfType is a negative value of a number or duration.
func invalidOfType(t reflect.Type) (any, bool) {
	if t == reflect.TypeFor[time.Duration]() {
		return "-1s", true
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Float64:
		return -1, true
	}
	return nil, false
}

// set sets the dotted path in m.
func set(m map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		sub, ok := m[p].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[p] = sub
		}
		m = sub
	}
	m[parts[len(parts)-1]] = v
}

// build loads m as a file, builds the server and opens its listeners.
func build(t *testing.T, m map[string]any) error {
	t.Helper()
	b, err := yaml.Parser().Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snorky.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path, nil)
	if err != nil {
		return err
	}
	s, err := snorky.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Listen()
}
