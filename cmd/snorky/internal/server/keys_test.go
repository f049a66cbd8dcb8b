package server

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/backendapi"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
	"github.com/snorkyhq/snorky/sync/chat"
	"github.com/snorkyhq/snorky/sync/cursors"
	"github.com/snorkyhq/snorky/sync/datasync"
	"github.com/snorkyhq/snorky/sync/identity"
	"github.com/snorkyhq/snorky/wsapi"
)

// TestFileKeys: every field a key table names is a field of its package's
// Config, and every key it maps to is a key of the file.
func TestFileKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  reflect.Type
		keys fileKeys
	}{
		{"identity", reflect.TypeFor[identity.Config](), identityKeys},
		{"chat", reflect.TypeFor[chat.Config](), chatKeys},
		{"cursors", reflect.TypeFor[cursors.Config](), cursorsKeys},
		{"datasync", reflect.TypeFor[datasync.Config](), datasyncKeys},
		{"wsapi", reflect.TypeFor[wsapi.Config](), wsapiKeys},
		{"backendapi", reflect.TypeFor[backendapi.Config](), backendKeys},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for field, key := range tc.keys {
				if _, ok := tc.cfg.FieldByName(field); !ok {
					t.Errorf("%s.Config has no field %s", tc.name, field)
				}
				if !fileHasKey(reflect.TypeFor[config.Config](), key) {
					t.Errorf("%s (for %s.Config.%s) is not a key of the file", key, tc.name, field)
				}
			}
		})
	}
}

// fileHasKey reports whether the dotted key names a field of t.
func fileHasKey(t reflect.Type, key string) bool {
	for _, seg := range strings.Split(key, ".") {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return false
		}
		found := false
		for i := range t.NumField() {
			if f := t.Field(i); f.Tag.Get("koanf") == seg {
				t, found = f.Type, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func TestFileKeysWrap(t *testing.T) {
	for _, tc := range []struct {
		keys      fileKeys
		err, want string
	}{
		{chatKeys, "MaxChannels: must not be negative (got -1)", "limits.channels_per_connection: must not be negative (got -1)"},
		{chatKeys, "MaxChannelBytes: must not be negative (got -1)", "limits.channel_bytes: must not be negative (got -1)"},
		{wsapiKeys, `AllowedOrigins[0]: "x" is not an origin`, `frontend.allowed_origins[0]: "x" is not an origin`},
		{datasyncKeys, "AcquireTimeout: 3m0s is longer than HistoryMaxAge (2m0s): …", "tokens.acquire_timeout: 3m0s is longer than database.history.max_age (2m0s): …"},
		{datasyncKeys, "models.Task.key[0]: empty column name", "models.Task.key[0]: empty column name"},
	} {
		cause := errors.New(tc.err)
		got := tc.keys.wrap(cause)
		if got.Error() != tc.want {
			t.Errorf("wrap(%q):\n got %q\nwant %q", tc.err, got, tc.want)
		}
		if !errors.Is(got, cause) {
			t.Errorf("wrap(%q) does not unwrap to the package's error", tc.err)
		}
	}
	if err := chatKeys.wrap(nil); err != nil {
		t.Errorf("wrap(nil) = %v, want nil", err)
	}
}
