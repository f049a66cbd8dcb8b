package server

import (
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
)

// fileKeys maps the Go fields of one package's Config, as its errors name
// them, to the keys of the configuration file they are built from.
type fileKeys map[string]string

// wrap returns err with every field it names replaced by the file's key
// ("MaxChannels: must not be negative" becomes
// "limits.channels_per_connection: must not be negative"), so that the
// operator reads a key the file has. It unwraps to err.
func (k fileKeys) wrap(err error) error {
	if err == nil {
		return nil
	}
	fields := slices.Collect(maps.Keys(k))
	// Longest first, so that a field never rewrites the start of another.
	slices.SortFunc(fields, func(a, b string) int { return len(b) - len(a) })
	for i, f := range fields {
		fields[i] = regexp.QuoteMeta(f)
	}
	re := regexp.MustCompile(`\b(` + strings.Join(fields, "|") + `)\b`)
	msg := re.ReplaceAllStringFunc(err.Error(), func(f string) string { return k[f] })
	return config.RenamedError{Msg: msg, Err: err}
}

// The file's keys of each package's Config.
var (
	identityKeys = fileKeys{
		"DefaultTTL":       "tokens.identity_ttl",
		"MaxIdentityBytes": "limits.identity_bytes",
		"MaxTokenBytes":    "limits.token_bytes",
	}
	chatKeys = fileKeys{
		"MaxChannels":     "limits.channels_per_connection",
		"MaxChannelBytes": "limits.channel_bytes",
		"MaxBodyBytes":    "limits.message_body_bytes",
		"MaxMembers":      "limits.members_per_reply",
	}
	cursorsKeys = fileKeys{
		"MaxDocuments":     "limits.documents_per_connection",
		"MaxDocumentBytes": "limits.document_bytes",
		"MaxHandleBytes":   "limits.cursor_handle_bytes",
		"MaxListed":        "limits.members_per_reply",
	}
	datasyncKeys = fileKeys{
		"Signer":           "tokens.secret",
		"AcquireTimeout":   "tokens.acquire_timeout",
		"PendingBytes":     "limits.pending_bytes",
		"MaxTxBytes":       "database.max_tx_bytes",
		"PositionInterval": "datasync.position_interval",
		"ResumeWait":       "datasync.resume_wait",
		"ResumeTTL":        "tokens.resume_ttl",
		"HistoryMaxAge":    "database.history.max_age",
		"HistoryMaxBytes":  "database.history.max_bytes",
	}
	wsapiKeys = fileKeys{
		"AllowedOrigins":    "frontend.allowed_origins",
		"MaxMessageBytes":   "frontend.max_message_bytes",
		"SendQueueBytes":    "frontend.send_queue_bytes",
		"MaxLag":            "frontend.max_lag",
		"PingInterval":      "frontend.ping_interval",
		"WriteTimeout":      "frontend.write_timeout",
		"RequireIdentity":   "frontend.require_identity",
		"CommandsPerSecond": "limits.commands_per_second",
		"RateLimitGrace":    "limits.rate_limit_grace",
		"IdleTimeout":       "limits.idle_timeout",
		"AuthTimeout":       "limits.auth_timeout",
		"IdentityService":   "services.identity",
		"MaxConnections":    "limits.max_connections",
		"ConnectionsPerIP":  "limits.connections_per_ip",
		"TrustedProxies":    "limits.trusted_proxies",
	}
	backendKeys = fileKeys{
		"Path":         "backend.path",
		"APIKey":       "backend.api_key",
		"MaxBodyBytes": "backend.max_body_bytes",
		"Pprof":        "backend.pprof",
		"MetricsAuth":  "backend.metrics_auth",
		"BodyTimeout":  "limits.http_read_timeout",
	}
)
