package datasync

import (
	"encoding/json"

	"github.com/snorkyhq/snorky/sync/rpc"
)

// Limit errors (reliability S1).
const (
	ErrTooManySubscriptions rpc.Error = "Too many subscriptions (limits.subscriptions_per_connection)"
	ErrTokenTooLarge        rpc.Error = "Token too large (limits.token_bytes)"
)

// Limits bounds what one client can make the frontend service hold; a zero
// field means no limit.
type Limits struct {
	// MaxSubscriptions is how many subscriptions one connection may hold.
	MaxSubscriptions int
	// MaxTokenBytes is the longest token the frontend accepts, and the
	// longest authorizeSubscription issues.
	MaxTokenBytes int
}

// Holds implements rpc.Holder: c holds at least one subscription.
func (f *Frontend) Holds(c rpc.Conn) bool { return f.e.subscriptionsOf(c) > 0 }

func (e *Engine) subscriptionsOf(c rpc.Conn) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.byConn[c])
}

// Limited returns the frontend service with limits applied. A connection's
// commands run one at a time, so the count checked before an acquire cannot
// change under it.
func (f *Frontend) Limited(l Limits) rpc.Service { return &limitedFrontend{Frontend: f, l: l} }

type limitedFrontend struct {
	*Frontend
	l Limits
}

func (lf *limitedFrontend) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	if lf.l.MaxTokenBytes > 0 {
		p := tokenParams(req.Params)
		if len(p.Token) > lf.l.MaxTokenBytes+2 || len(p.Resume) > lf.l.MaxTokenBytes+2 { // +2: the quotes
			return nil, ErrTokenTooLarge
		}
	}
	if (req.Command == "acquireSubscription" || req.Command == "resumeSubscription") && lf.l.MaxSubscriptions > 0 &&
		lf.e.subscriptionsOf(c) >= lf.l.MaxSubscriptions {
		return nil, ErrTooManySubscriptions
	}
	return lf.Frontend.Handle(c, req)
}

// tokenParams returns the raw text of params.token and params.resume (the
// credentials a client presents), when present.
func tokenParams(params json.RawMessage) (p struct {
	Token  json.RawMessage `json:"token"`
	Resume json.RawMessage `json:"resume"`
}) {
	_ = json.Unmarshal(params, &p)
	return p
}

// Limited returns the backend service refusing to issue a token longer
// than maxTokenBytes (0: no limit), which no client could then present. The
// refused subscription expires unacquired after tokens.acquire_timeout.
func (b *Backend) Limited(maxTokenBytes int) rpc.Service {
	return &limitedBackend{Backend: b, max: maxTokenBytes}
}

type limitedBackend struct {
	*Backend
	max int
}

func (lb *limitedBackend) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	res, err := lb.Backend.Handle(c, req)
	if tok, ok := res.(string); ok && err == nil && lb.max > 0 && req.Command == "authorizeSubscription" && len(tok) > lb.max {
		return nil, ErrTokenTooLarge
	}
	return res, err
}
