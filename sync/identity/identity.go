package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/membership"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/token"
)

// TokenPurpose is the token.Signer purpose of identity tokens.
const TokenPurpose = "snorky.identity.v1"

// DefaultTTL is the validity of a token issued without a ttl, when
// Config.DefaultTTL is zero.
const DefaultTTL = 24 * time.Hour

// Protocol error strings (spec §2.6).
const (
	ErrInvalidToken  rpc.Error = "Invalid token"
	ErrTokenExpired  rpc.Error = "Token expired"
	ErrIdentityIsSet rpc.Error = "Identity already set"
	// Limit errors of this project (reliability S1).
	ErrIdentityTooLarge rpc.Error = "Identity too large (limits.identity_bytes)"
	ErrTokenTooLarge    rpc.Error = "Token too large (limits.token_bytes)"
)

// Errors of AuthenticateToken; their text is the WebSocket close reason
// (spec §1.9), to be sent with close code rpc.CloseIdentity.
var (
	ErrURLTokenInvalid = errors.New("invalid identity token")
	ErrURLTokenExpired = errors.New("identity token expired")
	ErrAlreadySet      = errors.New("identity already set")
	ErrURLTokenTooLong = errors.New("identity token too large (limits.token_bytes)")
)

// Config configures identity tokens.
type Config struct {
	// DefaultTTL is how long a token issued without a ttl stays valid.
	// Zero means DefaultTTL (24h).
	DefaultTTL time.Duration
	// MaxIdentityBytes bounds the compact JSON text of an identity
	// (authorizeIdentity); MaxTokenBytes the length of a token presented by
	// a client. Zero means no limit.
	MaxIdentityBytes int
	MaxTokenBytes    int
}

// Validate reports a negative DefaultTTL. Errors name the field.
func (c Config) Validate() error {
	if c.DefaultTTL < 0 {
		return fmt.Errorf("DefaultTTL: must not be negative (got %s)", c.DefaultTTL)
	}
	return nil
}

// withDefaults returns c with each zero field that has a default set to
// it: DefaultTTL (the constant).
func (c Config) withDefaults() Config {
	if c.DefaultTTL == 0 {
		c.DefaultTTL = DefaultTTL
	}
	return c
}

// Directory issues and checks identity tokens and tracks the connections of
// each identity. Register Frontend() in the frontend registry and Backend()
// in the backend registry.
type Directory struct {
	signer *token.Signer
	cfg    Config
	now    func() time.Time // replaced in tests

	// conns holds the connections of each identity: a room per identity
	// key, which a connection joins once, when its identity is set.
	conns *membership.Set[struct{}, struct{}]

	// remote is set once by SetRemote, before the Directory is used; nil
	// on a single node.
	remote RevokeRemote
}

// RevokeRemote closes the connections of identity (JSON text) on the other
// nodes of a cluster and returns how many it closed, as far as it learnt
// (package relay). disconnectIdentity calls it after closing this node's.
type RevokeRemote func(identity json.RawMessage) int

// SetRemote makes disconnectIdentity reach the other nodes through f. Call
// it once, before the Directory is used. Revoke stays this node's: it is
// what f's counterpart on another node calls.
func (d *Directory) SetRemote(f RevokeRemote) { d.remote = f }

// New returns a Directory that signs with signer.
func New(signer *token.Signer, cfg Config) (*Directory, error) {
	if signer == nil {
		return nil, errors.New("identity: nil token signer")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Directory{signer: signer, cfg: cfg.withDefaults(), now: time.Now, conns: membership.New[struct{}, struct{}](membership.Limits{}, membership.Errors{})}, nil
}

// Issue returns an identity token for the JSON value identity, valid for
// ttl (the configured default when ttl is zero). It refuses null, invalid
// JSON and a negative ttl.
func (d *Directory) Issue(identity json.RawMessage, ttl time.Duration) (string, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, identity); err != nil {
		return "", fmt.Errorf("identity is not JSON: %w", err)
	}
	if buf.String() == "null" {
		return "", errors.New("identity must not be null")
	}
	if d.cfg.MaxIdentityBytes > 0 && buf.Len() > d.cfg.MaxIdentityBytes {
		return "", ErrIdentityTooLarge
	}
	if ttl < 0 {
		return "", errors.New("ttl must not be negative")
	}
	if ttl == 0 {
		ttl = d.cfg.DefaultTTL
	}
	return d.signer.Sign(TokenPurpose, buf.Bytes(), d.now().Add(ttl)), nil
}

// verify checks tok and returns its identity; errors are the protocol's.
func (d *Directory) verify(tok string) (*rpc.Identity, error) {
	payload, err := d.signer.Verify(TokenPurpose, tok, d.now())
	if errors.Is(err, token.ErrExpired) {
		return nil, ErrTokenExpired
	}
	if err != nil {
		return nil, ErrInvalidToken
	}
	key, err := jsonval.Canonical(payload)
	if err != nil || string(payload) == "null" {
		// Only a signer bug or a shared secret misused could get here.
		return nil, ErrInvalidToken
	}
	return &rpc.Identity{JSON: json.RawMessage(payload), Key: key}, nil
}

// set gives c the identity id and records it, unless c already has one.
// An identity is set once, by c's own handshake or request, so c is in no
// room yet and the Join cannot be refused; until it has returned nobody
// but c's own requests, which wait for it, can see c's identity, so a
// concurrent Revoke that misses c is one that came first.
func (d *Directory) set(c rpc.Conn, id *rpc.Identity) bool {
	if !c.SetIdentity(id) {
		return false
	}
	_ = d.conns.Join(c, membership.Key{Canonical: id.Key, JSON: id.JSON}, nil)
	return true
}

// AuthenticateToken sets c's identity from an identity token, for the
// WebSocket transport's ?token= query parameter. On failure the error's
// text is the close reason: ErrURLTokenInvalid ("invalid identity token"),
// ErrURLTokenExpired ("identity token expired") or ErrAlreadySet; the
// transport then closes c with rpc.CloseIdentity (4001).
func (d *Directory) AuthenticateToken(c rpc.Conn, tok string) error {
	if d.cfg.MaxTokenBytes > 0 && len(tok) > d.cfg.MaxTokenBytes {
		return ErrURLTokenTooLong
	}
	id, err := d.verify(tok)
	switch {
	case errors.Is(err, ErrTokenExpired):
		return ErrURLTokenExpired
	case err != nil:
		return ErrURLTokenInvalid
	}
	if !d.set(c, id) {
		return ErrAlreadySet
	}
	return nil
}

// Revoke closes every connection whose identity equals identity (JSON
// value equality) with code 4001 and reason "identity revoked", and returns
// how many it closed. Invalid JSON matches nothing.
func (d *Directory) Revoke(identity json.RawMessage) int {
	key, err := jsonval.Canonical(identity)
	if err != nil {
		return 0
	}
	conns := d.conns.Remove(key)
	for _, c := range conns {
		c.Close(rpc.CloseIdentity, rpc.ReasonIdentityRevoke)
	}
	return len(conns)
}

// Count returns the number of live connections with identity.
func (d *Directory) Count(identity json.RawMessage) int {
	key, err := jsonval.Canonical(identity)
	if err != nil {
		return 0
	}
	return d.conns.Count(key)
}

// forget drops c from the directory.
func (d *Directory) forget(c rpc.Conn) { d.conns.Disconnect(c, nil) }

// Frontend returns the frontend service (conventionally named "identity").
func (d *Directory) Frontend() *Frontend { return &Frontend{d: d} }

// Backend returns the backend service (conventionally "identity_backend").
func (d *Directory) Backend() *Backend { return &Backend{d: d} }

// Frontend is the frontend identity service: authenticate {token}.
type Frontend struct{ d *Directory }

// Handle implements rpc.Service.
func (f *Frontend) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	switch req.Command {
	case "authenticate":
		p, err := rpc.Params(req.Params, []string{"token"}, nil)
		if err != nil {
			return nil, err
		}
		if f.d.cfg.MaxTokenBytes > 0 && len(p["token"]) > f.d.cfg.MaxTokenBytes+2 {
			return nil, ErrTokenTooLarge
		}
		var tok string
		if err := json.Unmarshal(p["token"], &tok); err != nil {
			return nil, ErrInvalidToken
		}
		id, err := f.d.verify(tok)
		if err != nil {
			return nil, err
		}
		if !f.d.set(c, id) {
			return nil, ErrIdentityIsSet
		}
		return id.JSON, nil
	default:
		return nil, rpc.ErrUnknownCommand
	}
}

// Disconnected implements rpc.Disconnecter: it drops c from the directory.
func (f *Frontend) Disconnected(c rpc.Conn) { f.d.forget(c) }

// Backend is the backend identity service: authorizeIdentity and
// disconnectIdentity.
type Backend struct{ d *Directory }

// maxTTLSeconds keeps a ttl representable as a time.Duration.
const maxTTLSeconds = float64(math.MaxInt64/int64(time.Second)) - 1

// Handle implements rpc.Service.
func (b *Backend) Handle(_ rpc.Conn, req *rpc.Request) (any, error) {
	switch req.Command {
	case "authorizeIdentity":
		p, err := rpc.Params(req.Params, []string{"identity"}, []string{"ttl"})
		if err != nil {
			return nil, err
		}
		var ttl time.Duration
		if raw, ok := p["ttl"]; ok {
			var secs float64
			if err := json.Unmarshal(raw, &secs); err != nil || string(raw) == "null" ||
				!(secs > 0) || secs > maxTTLSeconds {
				return nil, rpc.ErrInvalidParams
			}
			ttl = time.Duration(secs * float64(time.Second))
			if ttl <= 0 {
				ttl = 1 // a positive ttl below a nanosecond
			}
		}
		if string(bytes.TrimSpace(p["identity"])) == "null" {
			return nil, rpc.ErrInvalidParams
		}
		return b.d.Issue(p["identity"], ttl)
	case "disconnectIdentity":
		p, err := rpc.Params(req.Params, []string{"identity"}, nil)
		if err != nil {
			return nil, err
		}
		n := b.d.Revoke(p["identity"])
		if b.d.remote != nil {
			n += b.d.remote(p["identity"])
		}
		return n, nil
	default:
		return nil, rpc.ErrUnknownCommand
	}
}
