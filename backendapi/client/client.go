// Package client is the Snorky backend API for Go web applications: the
// calls an application makes to the Snorky server's private backend
// endpoint (spec §4, §6), with the snapshot handoff of D8.
//
// A list handler that hands a subscription token to the browser runs its
// query and AuthorizeSubscription in one REPEATABLE READ transaction:
//
//	err := pgx.BeginTxFunc(ctx, db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
//		rows, err = listTasks(ctx, tx)
//		if err != nil || !client.SubscribeRequested(r) {
//			return err
//		}
//		token, err = snorky.AuthorizeSubscription(ctx, tx, client.Item{Dealer: "AllTasks"})
//		return err
//	})
//	…
//	w.Header().Set(client.TokenHeader, token)
//
// AuthorizeSubscription reads pg_current_snapshot() in that transaction and
// passes it to the server, so the subscription receives exactly the changes
// the list did not show: none lost, none twice.
//
// Every call is one HTTP POST of a Snorky envelope with the X-Backend-Key
// header and no callId. A non-2xx status, a malformed reply or an error
// reply is an error; an error reply is an *Error whose Message is the
// server's string (compare with errors.Is against ErrSnapshotTooOld and the
// other sentinels).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The HTTP headers of the list-view contract (spec §6).
const (
	// SubscribeHeader, with the value "Subscribe" (any case), asks a list
	// view for a subscription token.
	SubscribeHeader = "X-Snorky"
	// TokenHeader carries the token in the list view's response.
	TokenHeader = "X-Subscription-Token"
)

// SubscribeRequested reports whether r asks for a subscription token
// (the header X-Snorky: Subscribe, compared case-insensitively).
func SubscribeRequested(r *http.Request) bool {
	return strings.EqualFold(strings.TrimSpace(r.Header.Get(SubscribeHeader)), "subscribe")
}

// Config configures a Client.
type Config struct {
	// URL is the backend endpoint, e.g. http://127.0.0.1:5002/backend.
	// Required.
	URL string
	// APIKey is sent as X-Backend-Key. Required.
	APIKey string
	// DataSyncService, PubSubService and IdentityService are the backend
	// service names; defaults "datasync_backend", "pubsub_backend",
	// "identity_backend" (the server's services.* keys).
	DataSyncService string
	PubSubService   string
	IdentityService string
	// HTTPClient makes the calls. Nil: a client with a 10 s timeout.
	HTTPClient *http.Client
}

// Validate reports the first missing or malformed field.
func (c Config) Validate() error {
	if c.URL == "" {
		return errors.New("snorky client: URL is required (the backend endpoint, e.g. http://127.0.0.1:5002/backend)")
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("snorky client: URL %q is not an http:// or https:// URL", c.URL)
	}
	if c.APIKey == "" {
		return errors.New("snorky client: APIKey is required (the server's backend.api_key)")
	}
	return nil
}

// Client calls the backend API. It is safe for concurrent use.
type Client struct {
	cfg Config
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DataSyncService == "" {
		cfg.DataSyncService = "datasync_backend"
	}
	if cfg.PubSubService == "" {
		cfg.PubSubService = "pubsub_backend"
	}
	if cfg.IdentityService == "" {
		cfg.IdentityService = "identity_backend"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	return &Client{cfg: cfg}, nil
}

// Error is an error reply of the server: Message is its protocol string.
type Error struct {
	Service, Command string
	Message          string
}

func (e *Error) Error() string {
	return fmt.Sprintf("snorky %s.%s: %s", e.Service, e.Command, e.Message)
}

// Is matches another *Error with the same Message (the sentinels below).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == e.Message
}

// Sentinels for the error replies callers branch on.
var (
	// ErrSnapshotTooOld: the snapshot is older than the server's history
	// window; authorise without a snapshot before querying instead.
	ErrSnapshotTooOld = &Error{Message: "Snapshot too old"}
	// ErrNoDatabase: the server has no PostgreSQL source
	// ("Snapshots need a database").
	ErrNoDatabase = &Error{Message: "Snapshots need a database"}
	// ErrNoSuchDealer: no dealer has the item's name.
	ErrNoSuchDealer = &Error{Message: "No such dealer"}
)

// Call sends command with params to service and decodes the response's
// data into result (unless result is nil).
func (c *Client) Call(ctx context.Context, service, command string, params, result any) error {
	body, err := json.Marshal(map[string]any{
		"service": service,
		"message": map[string]any{"command": command, "params": params},
	})
	if err != nil {
		return fmt.Errorf("snorky %s.%s: encoding params: %w", service, command, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Backend-Key", c.cfg.APIKey)
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("snorky %s.%s: %w", service, command, err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("snorky %s.%s: reading the reply: %w", service, command, err)
	}
	if resp.StatusCode/100 != 2 {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized {
			hint = " (the API key differs from the server's backend.api_key)"
		}
		return fmt.Errorf("snorky %s.%s: HTTP %d%s: %s", service, command, resp.StatusCode, hint, bytes.TrimSpace(reply))
	}
	var env struct {
		Message struct {
			Type    string          `json:"type"`
			Data    json.RawMessage `json:"data"`
			Message string          `json:"message"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply, &env); err != nil {
		return fmt.Errorf("snorky %s.%s: malformed reply %.200q: %w", service, command, reply, err)
	}
	switch env.Message.Type {
	case "error":
		return &Error{Service: service, Command: command, Message: env.Message.Message}
	case "response":
		if result == nil {
			return nil
		}
		if err := json.Unmarshal(env.Message.Data, result); err != nil {
			return fmt.Errorf("snorky %s.%s: unexpected result %.200s: %w", service, command, env.Message.Data, err)
		}
		return nil
	}
	return fmt.Errorf("snorky %s.%s: unexpected reply %.200q", service, command, reply)
}

// Item is one subscription item: a dealer and its query (nil for a
// broadcast dealer; a key for a simple one; a filter for a filter dealer).
type Item struct {
	Dealer string `json:"dealer"`
	Query  any    `json:"query"`
}

// Querier runs a query in a transaction; pgx.Tx satisfies it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Snapshot returns pg_current_snapshot() of tx, which must be REPEATABLE
// READ or SERIALIZABLE so that it is the snapshot every query of tx sees.
func Snapshot(ctx context.Context, tx Querier) (string, error) {
	var snapshot, isolation string
	err := tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text, current_setting('transaction_isolation')`).Scan(&snapshot, &isolation)
	if err != nil {
		return "", fmt.Errorf("snorky: reading pg_current_snapshot(): %w", err)
	}
	if isolation != "repeatable read" && isolation != "serializable" {
		return "", fmt.Errorf("snorky: the transaction is %s: run the list query and AuthorizeSubscription in one REPEATABLE READ transaction (pgx.TxOptions{IsoLevel: pgx.RepeatableRead}), or its query may see a different snapshot", strings.ToUpper(isolation))
	}
	return snapshot, nil
}

// AuthorizeSubscription asks for a subscription to items and returns its
// token.
//
// With a transaction, it reads the transaction's snapshot and passes it to
// the server (D8): the subscription receives exactly the changes that
// transaction's queries did not see. tx must be REPEATABLE READ or
// SERIALIZABLE and still open; the list query may run before or after this
// call in it.
//
// With a nil tx it authorises without a snapshot (the original rule): call
// it before running the query, and expect changes already in the result
// to arrive again as deltas.
func (c *Client) AuthorizeSubscription(ctx context.Context, tx Querier, items ...Item) (string, error) {
	params := map[string]any{"items": nonNil(items)}
	if tx != nil {
		snapshot, err := Snapshot(ctx, tx)
		if err != nil {
			return "", err
		}
		params["snapshot"] = snapshot
	}
	return c.AuthorizeSubscriptionParams(ctx, params)
}

// AuthorizeSubscriptionParams calls authorizeSubscription with params as
// given ({"items": […], "snapshot"?: "…"}).
func (c *Client) AuthorizeSubscriptionParams(ctx context.Context, params map[string]any) (string, error) {
	var token string
	if err := c.Call(ctx, c.cfg.DataSyncService, "authorizeSubscription", params, &token); err != nil {
		return "", err
	}
	if token == "" {
		return "", fmt.Errorf("snorky %s.authorizeSubscription: empty token", c.cfg.DataSyncService)
	}
	return token, nil
}

func nonNil(items []Item) []Item {
	if items == nil {
		return []Item{}
	}
	return items
}

// Delta is a delta for PublishDeltas (spec §3.6): Data for insert and
// delete, NewData and OldData for update.
type Delta struct {
	Type    string `json:"type"`
	Model   string `json:"model"`
	Data    any    `json:"data,omitempty"`
	NewData any    `json:"newData,omitempty"`
	OldData any    `json:"oldData,omitempty"`
}

// PublishDeltas routes deltas through the model's dealers, as if they came
// from the database. The batch is validated whole: an invalid delta fails
// it and nothing is delivered. Publish after your transaction commits.
// Tables that Snorky reads from PostgreSQL need no PublishDeltas.
func (c *Client) PublishDeltas(ctx context.Context, deltas ...Delta) error {
	if deltas == nil {
		deltas = []Delta{}
	}
	return c.Call(ctx, c.cfg.DataSyncService, "publishDeltas", map[string]any{"deltas": deltas}, nil)
}

// Publish sends message to every PubSub subscriber of channel (any JSON
// value).
func (c *Client) Publish(ctx context.Context, channel, message any) error {
	return c.Call(ctx, c.cfg.PubSubService, "publish", map[string]any{"channel": channel, "message": message}, nil)
}

// AuthorizeIdentity returns an identity token for identity (any JSON value
// but null), for Chat and Cursors (D9). The browser passes it as the token
// query parameter of the WebSocket URL or with identity.authenticate. A
// zero ttl takes the server's tokens.identity_ttl; otherwise it is rounded
// up to whole seconds.
func (c *Client) AuthorizeIdentity(ctx context.Context, identity any, ttl time.Duration) (string, error) {
	if identity == nil {
		return "", errors.New("snorky: AuthorizeIdentity: the identity must not be nil")
	}
	params := map[string]any{"identity": identity}
	if ttl < 0 {
		return "", fmt.Errorf("snorky: AuthorizeIdentity: negative ttl %v", ttl)
	}
	if ttl > 0 {
		params["ttl"] = int64((ttl + time.Second - 1) / time.Second)
	}
	var token string
	if err := c.Call(ctx, c.cfg.IdentityService, "authorizeIdentity", params, &token); err != nil {
		return "", err
	}
	return token, nil
}

// DisconnectIdentity closes every connection of identity (a logout or a
// change of permissions) and returns how many were closed.
func (c *Client) DisconnectIdentity(ctx context.Context, identity any) (int, error) {
	var n int
	err := c.Call(ctx, c.cfg.IdentityService, "disconnectIdentity", map[string]any{"identity": identity}, &n)
	return n, err
}
