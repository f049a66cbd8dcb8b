// Package config is the configuration file of the snorky command: its
// types, loading (koanf: defaults, then the YAML file, then SNORKY_
// environment variables) and the checks that span sections.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/snorkyhq/snorky/sync/pubsub"
)

// Config is the whole configuration file (README "Configuration").
type Config struct {
	Database *DatabaseConfig         `koanf:"database"`
	Frontend FrontendConfig          `koanf:"frontend"`
	Backend  BackendConfig           `koanf:"backend"`
	Tokens   TokensConfig            `koanf:"tokens"`
	Services ServicesConfig          `koanf:"services"`
	PubSub   PubSubConfig            `koanf:"pubsub"`
	Limits   LimitsConfig            `koanf:"limits"`
	DataSync DataSyncConfig          `koanf:"datasync"`
	Models   map[string]ModelConfig  `koanf:"models"`
	Dealers  map[string]DealerConfig `koanf:"dealers"`
	Log      LogConfig               `koanf:"log"`
	Shutdown ShutdownConfig          `koanf:"shutdown"`
	Cluster  *ClusterConfig          `koanf:"cluster"`
}

// DatabaseConfig is the PostgreSQL source; absent means DataSync is fed by
// publishDeltas only.
type DatabaseConfig struct {
	URL             string        `koanf:"url"`
	Slot            string        `koanf:"slot"`
	Publication     string        `koanf:"publication"`
	TimeZone        string        `koanf:"timezone"`
	ReplicaIdentity string        `koanf:"replica_identity"`
	Migrate         bool          `koanf:"migrate"`
	History         HistoryConfig `koanf:"history"`
	// MaxTxBytes bounds the decoded row data of one transaction (and the
	// size of a publishDeltas batch); over it, subscribers of the models it
	// touched must refetch (spec §3.10). 0 disables the cap.
	MaxTxBytes ByteSize `koanf:"max_tx_bytes"`
	// StatusInterval is the period of standby status updates to
	// PostgreSQL (confirmed position); HeartbeatInterval the period of the
	// heartbeat message that lets the slot advance on an idle database
	// (negative disables it).
	StatusInterval    time.Duration `koanf:"status_interval"`
	HeartbeatInterval time.Duration `koanf:"heartbeat_interval"`
	// DeadLinkTimeout: a replication connection silent this long is dead
	// (a blackholed network, a hung PostgreSQL) and is replaced, with the
	// reconnect backoff; it also bounds connecting and sets the TCP
	// keepalives. 0 (the default): 4 × status_interval (20s); at least 2 ×
	// status_interval. Keep it at or below PostgreSQL's wal_sender_timeout
	// (60s by default) so that both sides give up on a dead link alike.
	DeadLinkTimeout time.Duration `koanf:"dead_link_timeout"`
}

// DataSyncConfig tunes resume (spec §3.9).
type DataSyncConfig struct {
	// PositionInterval is how often opted-in connections get position
	// notifications; ResumeWait how long a resume waits for a restarted
	// server to reach the client's offset.
	PositionInterval time.Duration `koanf:"position_interval"`
	ResumeWait       time.Duration `koanf:"resume_wait"`
}

// HistoryConfig bounds the replay window: the recent transactions the
// engine keeps for acquire, resume and snapshot handoff.
type HistoryConfig struct {
	MaxAge   time.Duration `koanf:"max_age"`
	MaxBytes ByteSize      `koanf:"max_bytes"`
}

// TLSConfig enables TLS on a listener when both files are set.
type TLSConfig struct {
	CertFile string `koanf:"cert_file"`
	KeyFile  string `koanf:"key_file"`
}

// FrontendConfig is the public WebSocket listener.
type FrontendConfig struct {
	Listen          string        `koanf:"listen"`
	Path            string        `koanf:"path"`
	RequireIdentity bool          `koanf:"require_identity"`
	AllowedOrigins  []string      `koanf:"allowed_origins"`
	MaxMessageBytes ByteSize      `koanf:"max_message_bytes"`
	SendQueueBytes  ByteSize      `koanf:"send_queue_bytes"`
	PingInterval    time.Duration `koanf:"ping_interval"`
	WriteTimeout    time.Duration `koanf:"write_timeout"`
	MaxLag          time.Duration `koanf:"max_lag"`
	TLS             TLSConfig     `koanf:"tls"`
	SockJSPath      string        `koanf:"sockjs_path"` // frontend.go
	StaticDir       string        `koanf:"static_dir"`  // frontend.go
}

// BackendConfig is the private HTTP listener.
type BackendConfig struct {
	Listen       string    `koanf:"listen"`
	Path         string    `koanf:"path"`
	APIKey       string    `koanf:"api_key"`
	MaxBodyBytes ByteSize  `koanf:"max_body_bytes"`
	Pprof        bool      `koanf:"pprof"`
	TLS          TLSConfig `koanf:"tls"`
	// MetricsAuth makes /metrics (and /debug/pprof/) require the API key;
	// absent: required unless the listener is on loopback.
	MetricsAuth *bool `koanf:"metrics_auth"`
}

// TokensConfig signs subscription and identity tokens.
type TokensConfig struct {
	Secret         string        `koanf:"secret"`
	AcquireTimeout time.Duration `koanf:"acquire_timeout"`
	IdentityTTL    time.Duration `koanf:"identity_ttl"`
	ResumeTTL      time.Duration `koanf:"resume_ttl"`
}

// ServicesConfig holds the service names on the wire.
type ServicesConfig struct {
	PubSub          string `koanf:"pubsub"`
	PubSubBackend   string `koanf:"pubsub_backend"`
	Messaging       string `koanf:"messaging"`
	DataSync        string `koanf:"datasync"`
	DataSyncBackend string `koanf:"datasync_backend"`
	Chat            string `koanf:"chat"`
	Cursors         string `koanf:"cursors"`
	Identity        string `koanf:"identity"`
	IdentityBackend string `koanf:"identity_backend"`
}

// PubSubConfig is the client publish policy.
type PubSubConfig struct {
	// ClientPublish is true, false, or a list of channel prefixes clients
	// may publish to.
	ClientPublish any `koanf:"client_publish"`
	// ClientPublishDeny lists channel prefixes clients may not publish to.
	ClientPublishDeny []string `koanf:"client_publish_deny"`
}

// LimitsConfig holds per-connection limits (reliability.md S1).
type LimitsConfig struct {
	CommandsPerSecond     float64       `koanf:"commands_per_second"`
	RateLimitGrace        time.Duration `koanf:"rate_limit_grace"`
	ChannelsPerConnection int           `koanf:"channels_per_connection"`
	DocumentsPerConn      int           `koanf:"documents_per_connection"`
	MessageBodyBytes      ByteSize      `koanf:"message_body_bytes"`
	PendingBytes          ByteSize      `koanf:"pending_bytes"`

	// Hardening of the public surface (issue 11; README "Running on the
	// internet"). Sizes of names are in bytes of their canonical JSON text.
	IdleTimeout           time.Duration `koanf:"idle_timeout"`
	AuthTimeout           time.Duration `koanf:"auth_timeout"`
	MaxConnections        int           `koanf:"max_connections"`
	ConnectionsPerIP      int           `koanf:"connections_per_ip"`
	TrustedProxies        []string      `koanf:"trusted_proxies"`
	ChannelBytes          ByteSize      `koanf:"channel_bytes"`
	DocumentBytes         ByteSize      `koanf:"document_bytes"`
	CursorHandleBytes     ByteSize      `koanf:"cursor_handle_bytes"`
	NamesPerConnection    int           `koanf:"names_per_connection"`
	NameBytes             ByteSize      `koanf:"name_bytes"`
	ParticipantsPerReply  int           `koanf:"participants_per_reply"`
	MembersPerReply       int           `koanf:"members_per_reply"`
	SubscriptionsPerConn  int           `koanf:"subscriptions_per_connection"`
	IdentityBytes         ByteSize      `koanf:"identity_bytes"`
	TokenBytes            ByteSize      `koanf:"token_bytes"`
	HTTPReadHeaderTimeout time.Duration `koanf:"http_read_header_timeout"`
	HTTPReadTimeout       time.Duration `koanf:"http_read_timeout"`
	HTTPIdleTimeout       time.Duration `koanf:"http_idle_timeout"`
	HTTPMaxHeaderBytes    ByteSize      `koanf:"http_max_header_bytes"`
}

// ModelConfig declares a model: a table, or a name fed by publishDeltas.
type ModelConfig struct {
	Table           string   `koanf:"table"`
	Key             []string `koanf:"key"`
	Columns         []string `koanf:"columns"`
	ReplicaIdentity string   `koanf:"replica_identity"`
}

// DealerConfig declares a dealer.
type DealerConfig struct {
	Model string `koanf:"model"`
	Kind  string `koanf:"kind"`
	Key   string `koanf:"key"`
}

// LogConfig configures logging.
type LogConfig struct {
	Level  string `koanf:"level"`
	Format string `koanf:"format"`
}

// ShutdownConfig bounds the graceful shutdown.
type ShutdownConfig struct {
	Timeout time.Duration `koanf:"timeout"`
}

// defaults are the values of the keys not set in the file or environment
// that the file itself defines: keys only the snorky command reads (paths,
// listeners, log, shutdown, HTTP timeouts, service names), and keys whose
// zero means something else in the file than in the package that takes it
// (0 is "no limit" or "off" for one and "the default" for the other, or the
// file's default differs, or two packages share the key). Every other key
// is left zero here: the package's withDefaults sets it, so each default
// is written once.
func defaults() map[string]any {
	return map[string]any{
		"frontend.listen":                 ":5001",
		"frontend.path":                   "/ws",
		"frontend.allowed_origins":        []string{},
		"frontend.ping_interval":          "25s", // 0 disables (spec §1.1)
		"backend.listen":                  "127.0.0.1:5002",
		"backend.path":                    "/backend",
		"tokens.acquire_timeout":          "120s",
		"tokens.identity_ttl":             "24h",
		"services.pubsub":                 "pubsub",
		"services.pubsub_backend":         "pubsub_backend",
		"services.messaging":              "messaging",
		"services.datasync":               "datasync",
		"services.datasync_backend":       "datasync_backend",
		"services.chat":                   "chat",
		"services.cursors":                "cursors",
		"services.identity":               "identity",
		"services.identity_backend":       "identity_backend",
		"pubsub.client_publish":           true,
		"limits.commands_per_second":      100,
		"limits.channels_per_connection":  256,
		"limits.documents_per_connection": 64,
		// The file's 0 is "no cap" for every count and size limit (see
		// server.noCap); these are the packages' defaults, written here so
		// that an unset key is told from 0.
		"limits.message_body_bytes":  "16KiB",
		"limits.document_bytes":      "256B",
		"limits.cursor_handle_bytes": "256B",
		"limits.members_per_reply":   1000,
		"limits.pending_bytes":       "8MiB",
		// Hardening (issue 11); README "Running on the internet".
		"limits.idle_timeout":                 "60s",
		"limits.max_connections":              10000,
		"limits.connections_per_ip":           256,
		"limits.trusted_proxies":              []string{},
		"limits.channel_bytes":                "256B",
		"limits.names_per_connection":         16,
		"limits.name_bytes":                   "256B",
		"limits.participants_per_reply":       1000,
		"limits.subscriptions_per_connection": 64,
		"limits.identity_bytes":               "1KiB",
		"limits.token_bytes":                  "8KiB",
		"limits.http_read_header_timeout":     "10s",
		"limits.http_read_timeout":            "30s",
		"limits.http_idle_timeout":            "60s",
		"limits.http_max_header_bytes":        "32KiB",
		"log.level":                           "info",
		"log.format":                          "text",
		"shutdown.timeout":                    "10s",
	}
}

func databaseDefaults() map[string]any {
	return map[string]any{
		"database.slot":              "snorky",
		"database.publication":       "snorky",
		"database.timezone":          "UTC",
		"database.replica_identity":  "full",
		"database.history.max_age":   "2m",
		"database.history.max_bytes": "64MiB",
		"database.max_tx_bytes":      "64MiB",
	}
}

const envPrefix = "SNORKY_"

// Load reads defaults, then the YAML file (if path is not empty), then
// SNORKY_ environment variables. It returns warnings for environment
// variables that name no key.
func Load(path string, environ []string) (*Config, []string, error) {
	k := koanf.New(".")
	fileK := koanf.New(".")
	if path != "" {
		if err := fileK.Load(file.Provider(path), yaml.Parser()); err != nil {
			return nil, nil, fileError(path, err)
		}
		if unknown := unknownKeys(fileK.Raw(), reflect.TypeFor[Config](), ""); len(unknown) > 0 {
			return nil, nil, fmt.Errorf("config file %s: %s", path, strings.Join(unknown, "; "))
		}
	}
	envK := koanf.New(".")
	if err := envK.Load(env.Provider(".", env.Opt{
		Prefix: envPrefix,
		TransformFunc: func(key, v string) (string, any) {
			return envKey(key), v
		},
		EnvironFunc: func() []string { return environ },
	}), nil); err != nil {
		return nil, nil, fmt.Errorf("reading environment: %w", err)
	}
	var warnings []string
	for _, key := range envK.Keys() {
		if fieldType(reflect.TypeFor[Config](), key) == nil {
			envK.Delete(key)
			name := envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "__"))
			if strings.HasPrefix(name, "SNORKY_TEST_") || strings.HasPrefix(name, "SNORKY_BENCH_") {
				continue // the tests' and benchmarks' own variables
			}
			warnings = append(warnings, fmt.Sprintf("environment variable %s names no configuration key; ignored", name))
		}
	}

	k.Load(confmap.Provider(defaults(), "."), nil)
	if fileK.Exists("database") || envK.Exists("database") {
		k.Load(confmap.Provider(databaseDefaults(), "."), nil)
	}
	if fileK.Exists("cluster") || envK.Exists("cluster") {
		k.Load(confmap.Provider(clusterDefaults(), "."), nil)
	}
	k.Merge(fileK)
	k.Merge(envK)

	var cfg Config
	dc := &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.TextUnmarshallerHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		Result:           &cfg,
		TagName:          "koanf",
	}
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{DecoderConfig: dc}); err != nil {
		return nil, warnings, fmt.Errorf("config: %s", cleanDecodeError(err))
	}
	sort.Strings(warnings)
	return &cfg, warnings, nil
}

// envKey maps SNORKY_BACKEND__API_KEY to backend.api_key.
func envKey(name string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, envPrefix)), "__", ".")
}

func cleanDecodeError(err error) string {
	s := err.Error()
	s = strings.ReplaceAll(s, "decoding failed due to the following error(s):\n\n", "")
	return strings.ReplaceAll(s, "\n", "; ")
}

// fieldType returns the type at a dotted key path, or nil when the path
// names no key. Map segments accept any name.
func fieldType(t reflect.Type, path string) reflect.Type {
	for _, seg := range strings.Split(path, ".") {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Struct:
			f, ok := structField(t, seg)
			if !ok {
				return nil
			}
			t = f.Type
		case reflect.Map:
			t = t.Elem()
		default:
			return nil
		}
	}
	return t
}

func structField(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("koanf") == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// unknownKeys lists the keys of v (a value read from YAML) that t does not
// declare, each with the keys that t does declare there.
func unknownKeys(v any, t reflect.Type, path string) []string {
	if t == nil {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	var out []string
	switch t.Kind() {
	case reflect.Struct:
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range m {
				if !yield(k) {
					return
				}
			}
		})
		for _, name := range names {
			f, ok := structField(t, name)
			if !ok {
				out = append(out, fmt.Sprintf("unknown key %s (known keys here: %s)", join(path, name), strings.Join(knownKeys(t), ", ")))
				continue
			}
			out = append(out, unknownKeys(m[name], f.Type, join(path, name))...)
		}
	case reflect.Map:
		for name, sub := range m {
			out = append(out, unknownKeys(sub, t.Elem(), join(path, name))...)
		}
	}
	return out
}

func knownKeys(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		out = append(out, t.Field(i).Tag.Get("koanf"))
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// ByteSize is a size in bytes, written as a number or with a unit: "64KiB",
// "1MiB", "2GiB", "512B", "10kB".
type ByteSize int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a size: write a number of bytes or one with a unit (B, KiB, MiB, GiB, kB, MB, GB), e.g. 64KiB", string(text))
	}
	*b = ByteSize(n * mult)
	return nil
}

// Validate checks what no package Config checks: cross-section rules.
func (c *Config) Validate() error {
	if err := checkSecret("tokens.secret", "SNORKY_TOKENS__SECRET", "signs subscription and identity tokens", c.Tokens.Secret); err != nil {
		return err
	}
	if err := checkSecret("backend.api_key", "SNORKY_BACKEND__API_KEY", "guards the backend API", c.Backend.APIKey); err != nil {
		return err
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	if c.Tokens.AcquireTimeout <= 0 {
		return errors.New("tokens.acquire_timeout: must be positive")
	}
	if c.Tokens.IdentityTTL <= 0 {
		return errors.New("tokens.identity_ttl: must be positive")
	}
	if c.Frontend.Path == "" || c.Frontend.Path[0] != '/' {
		return errors.New("frontend.path: must start with /")
	}
	if c.Frontend.Listen == "" {
		return errors.New("frontend.listen: must be set, e.g. \":5001\"")
	}
	if err := c.Frontend.validateExtras(); err != nil {
		return err
	}
	if c.Backend.Listen == "" {
		return errors.New("backend.listen: must be set, e.g. \"127.0.0.1:5002\"")
	}
	if err := c.Frontend.TLS.validate("frontend.tls"); err != nil {
		return err
	}
	if err := c.Backend.TLS.validate("backend.tls"); err != nil {
		return err
	}
	names := map[string]string{}
	v := reflect.ValueOf(c.Services)
	for i := range v.NumField() {
		key := "services." + v.Type().Field(i).Tag.Get("koanf")
		name := v.Field(i).String()
		if name == "" {
			return fmt.Errorf("%s: must not be empty", key)
		}
		if other, ok := names[name]; ok {
			return fmt.Errorf("%s: name %q is already used by %s", key, name, other)
		}
		names[name] = key
	}
	if _, err := c.PubSubPolicy(); err != nil {
		return err
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not one of text, json", c.Log.Format)
	}
	if c.Shutdown.Timeout <= 0 {
		return errors.New("shutdown.timeout: must be positive")
	}
	return nil
}

func (t TLSConfig) validate(key string) error {
	if t.CertFile != "" && t.KeyFile == "" {
		return fmt.Errorf("%s.key_file: set both cert_file and key_file, or neither", key)
	}
	if t.CertFile == "" && t.KeyFile != "" {
		return fmt.Errorf("%s.cert_file: set both cert_file and key_file, or neither", key)
	}
	for _, f := range []struct{ key, path string }{{"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s.%s: %v", key, f.key, err)
		}
	}
	return nil
}

// PubSubPolicy turns pubsub.client_publish (true, false or a list of
// prefixes) and pubsub.client_publish_deny into a policy.
func (c *Config) PubSubPolicy() (pubsub.Policy, error) {
	p := pubsub.Policy{DenyPrefixes: c.PubSub.ClientPublishDeny}
	switch v := c.PubSub.ClientPublish.(type) {
	case bool:
		p.ClientPublish = v
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			// From the environment: a comma-separated list of prefixes.
			p.ClientPublish = true
			p.AllowPrefixes = strings.Split(v, ",")
			break
		}
		p.ClientPublish = b
	case []any:
		p.ClientPublish = true
		for i, e := range v {
			s, ok := e.(string)
			if !ok || s == "" {
				return p, fmt.Errorf("pubsub.client_publish[%d]: must be a non-empty channel prefix string", i)
			}
			p.AllowPrefixes = append(p.AllowPrefixes, s)
		}
		if len(p.AllowPrefixes) == 0 {
			p.ClientPublish = false
		}
	default:
		return p, fmt.Errorf("pubsub.client_publish: must be true, false, or a list of channel prefixes clients may publish to")
	}
	return p, nil
}
