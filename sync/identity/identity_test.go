package identity

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
	"github.com/snorkyhq/snorky/sync/token"
)

var (
	secret = []byte("identity-test-secret-0123456789")
	t0     = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
)

type env struct {
	t         *testing.T
	dir       *Directory
	signer    *token.Signer
	now       time.Time
	front     *rpc.Registry
	back      *rpc.Registry
	backendCn *rpctest.Conn
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	signer, err := token.New(secret)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := New(signer, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, signer: signer, now: t0, front: rpc.NewRegistry(nil), back: rpc.NewRegistry(nil), backendCn: rpctest.NewConn()}
	dir.now = func() time.Time { return e.now }
	if err := e.front.Register("identity", dir.Frontend()); err != nil {
		t.Fatal(err)
	}
	if err := e.back.Register("identity_backend", dir.Backend()); err != nil {
		t.Fatal(err)
	}
	return e
}

// authorize returns a token for identity (JSON), with params extra.
func (e *env) authorize(params string) string {
	e.t.Helper()
	r := rpctest.Call(e.t, e.back, e.backendCn, "identity_backend", "authorizeIdentity", params)
	var tok string
	if err := json.Unmarshal(r.Data(e.t), &tok); err != nil {
		e.t.Fatalf("authorizeIdentity: got %s, want a string", r.Raw)
	}
	return tok
}

func (e *env) authenticate(c *rpctest.Conn, tok string) rpctest.Reply {
	e.t.Helper()
	b, _ := json.Marshal(tok)
	return rpctest.Call(e.t, e.front, c, "identity", "authenticate", `{"token":`+string(b)+`}`)
}

func TestAuthorizeThenAuthenticate(t *testing.T) {
	e := newEnv(t, Config{})
	tok := e.authorize(`{"identity": {"user": "alice", "roles": ["admin"]}}`)
	for _, r := range tok {
		if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", r) {
			t.Fatalf("token %q has %q, want URL-safe characters only", tok, r)
		}
	}
	c := rpctest.NewConn()
	r := e.authenticate(c, tok)
	rpctest.JSONEqual(t, "authenticate data", r.Data(t), `{"roles":["admin"],"user":"alice"}`)
	id := c.Identity()
	if id == nil {
		t.Fatal("identity not set")
	}
	if want := rpctest.Identity(t, `{"roles":["admin"],"user":"alice"}`).Key; id.Key != want {
		t.Fatalf("identity key: got %q, want %q", id.Key, want)
	}
	if n := e.dir.Count(json.RawMessage(`{"user":"alice","roles":["admin"]}`)); n != 1 {
		t.Fatalf("directory: got %d connections, want 1", n)
	}
	e.front.Disconnect(c)
	if n := e.dir.Count(json.RawMessage(`{"user":"alice","roles":["admin"]}`)); n != 0 {
		t.Fatalf("directory after disconnect: got %d connections, want 0", n)
	}
}

func TestAuthenticateErrors(t *testing.T) {
	e := newEnv(t, Config{})
	valid := e.authorize(`{"identity":"alice"}`)
	short := e.authorize(`{"identity":"alice","ttl":60}`)
	other, _ := token.New([]byte("some-other-secret-0123456789"))

	for _, tc := range []struct {
		name   string
		params string
		after  time.Duration
		want   string
	}{
		{"garbage", `{"token":"hello"}`, 0, "Invalid token"},
		{"empty", `{"token":""}`, 0, "Invalid token"},
		{"not a string", `{"token":42}`, 0, "Invalid token"},
		{"null", `{"token":null}`, 0, "Invalid token"},
		{"tampered", tokParams(tamper(valid)), 0, "Invalid token"},
		{"truncated", tokParams(valid[:len(valid)-2]), 0, "Invalid token"},
		{"subscription token", tokParams(e.signer.Sign("snorky.subscription.v1", []byte(`"alice"`), t0.Add(time.Hour))), 0, "Invalid token"},
		{"other secret", tokParams(other.Sign(TokenPurpose, []byte(`"alice"`), t0.Add(time.Hour))), 0, "Invalid token"},
		{"null identity inside", tokParams(e.signer.Sign(TokenPurpose, []byte(`null`), t0.Add(time.Hour))), 0, "Invalid token"},
		{"expired after ttl", tokParams(short), 60 * time.Second, "Token expired"},
		{"valid just before ttl", tokParams(short), 59*time.Second + 999*time.Millisecond, ""},
		{"default ttl 24h expired", tokParams(valid), 24 * time.Hour, "Token expired"},
		{"expired and tampered", tokParams(tamper(short)), time.Hour, "Invalid token"},
		{"missing token", `{}`, 0, "Invalid params"},
		{"extra param", `{"token":"x","identity":1}`, 0, "Invalid params"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t, e.now = t, t0.Add(tc.after)
			c := rpctest.NewConn()
			r := rpctest.Call(t, e.front, c, "identity", "authenticate", tc.params)
			if got := r.Err(); got != tc.want {
				t.Fatalf("got reply %s, want error %q", r.Raw, tc.want)
			}
			if (c.Identity() != nil) != (tc.want == "") {
				t.Fatalf("identity: got %v, want set=%v", c.Identity(), tc.want == "")
			}
		})
	}
}

func tokParams(tok string) string { return `{"token":"` + tok + `"}` }

// tamper changes one character in the middle of tok (the payload).
func tamper(tok string) string {
	b := []byte(tok)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestIdentityAlreadySet(t *testing.T) {
	e := newEnv(t, Config{})
	alice := e.authorize(`{"identity":"alice"}`)
	bob := e.authorize(`{"identity":"bob"}`)
	c := rpctest.NewConn()
	e.authenticate(c, alice).Data(t)
	for _, tok := range []string{alice, bob} {
		if got := e.authenticate(c, tok).Err(); got != "Identity already set" {
			t.Fatalf("second authenticate: got %q, want %q", got, "Identity already set")
		}
	}
	// The token is checked first.
	if got := e.authenticate(c, "junk").Err(); got != "Invalid token" {
		t.Fatalf("bad token on an authenticated connection: got %q, want %q", got, "Invalid token")
	}
	if got := string(c.Identity().JSON); got != `"alice"` {
		t.Fatalf("identity: got %s, want \"alice\"", got)
	}
	if n := e.dir.Count(json.RawMessage(`"bob"`)); n != 0 {
		t.Fatalf("bob's connections: got %d, want 0", n)
	}
}

func TestAuthorizeIdentityParams(t *testing.T) {
	e := newEnv(t, Config{DefaultTTL: time.Hour})
	for _, tc := range []struct {
		name, params string
		valid        time.Duration // 0: an error is expected
	}{
		{"default ttl", `{"identity":"a"}`, time.Hour},
		{"ttl seconds", `{"identity":"a","ttl":90}`, 90 * time.Second},
		{"fractional ttl", `{"identity":"a","ttl":0.5}`, 500 * time.Millisecond},
		{"any JSON identity", `{"identity":[1,{"x":null}],"ttl":1e1}`, 10 * time.Second},
		{"identity false", `{"identity":false}`, time.Hour},
		{"null identity", `{"identity":null}`, 0},
		{"null identity, spaced", `{"identity": null }`, 0},
		{"zero ttl", `{"identity":"a","ttl":0}`, 0},
		{"negative ttl", `{"identity":"a","ttl":-5}`, 0},
		{"string ttl", `{"identity":"a","ttl":"60"}`, 0},
		{"null ttl", `{"identity":"a","ttl":null}`, 0},
		{"bool ttl", `{"identity":"a","ttl":true}`, 0},
		{"huge ttl", `{"identity":"a","ttl":1e300}`, 0},
		{"overflowing ttl", `{"identity":"a","ttl":1e400}`, 0},
		{"missing identity", `{"ttl":5}`, 0},
		{"unknown param", `{"identity":"a","exp":5}`, 0},
		{"params not an object", `["a"]`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t, e.now = t, t0
			r := rpctest.Call(t, e.back, e.backendCn, "identity_backend", "authorizeIdentity", tc.params)
			if tc.valid == 0 {
				if got := r.Err(); got != "Invalid params" {
					t.Fatalf("got reply %s, want error %q", r.Raw, "Invalid params")
				}
				return
			}
			var tok string
			if err := json.Unmarshal(r.Data(t), &tok); err != nil {
				t.Fatalf("got %s, want a token string", r.Raw)
			}
			e.now = t0.Add(tc.valid - time.Millisecond)
			if err := e.dir.AuthenticateToken(rpctest.NewConn(), tok); err != nil {
				t.Fatalf("1ms before the ttl: got %v, want nil", err)
			}
			e.now = t0.Add(tc.valid)
			if err := e.dir.AuthenticateToken(rpctest.NewConn(), tok); !errors.Is(err, ErrURLTokenExpired) {
				t.Fatalf("at the ttl: got %v, want %v", err, ErrURLTokenExpired)
			}
		})
	}
}

func TestDisconnectIdentity(t *testing.T) {
	e := newEnv(t, Config{})
	alice := e.authorize(`{"identity":{"user":"alice","n":1}}`)
	bob := e.authorize(`{"identity":{"user":"bob","n":1}}`)
	phone, laptop, bobs, anon := rpctest.NewConn(), rpctest.NewConn(), rpctest.NewConn(), rpctest.NewConn()
	e.authenticate(phone, alice)
	if err := e.dir.AuthenticateToken(laptop, alice); err != nil {
		t.Fatal(err)
	}
	e.authenticate(bobs, bob)

	revoke := func(identity string) string {
		t.Helper()
		r := rpctest.Call(t, e.back, e.backendCn, "identity_backend", "disconnectIdentity", `{"identity":`+identity+`}`)
		return string(r.Data(t))
	}
	// JSON value equality: another spelling of alice.
	if got := revoke(`{"n":1.0,"user":"alice"}`); got != "2" {
		t.Fatalf("disconnectIdentity alice: got %s, want 2", got)
	}
	for name, c := range map[string]*rpctest.Conn{"phone": phone, "laptop": laptop} {
		closed, code, reason := c.Closed()
		if !closed || code != 4001 || reason != "identity revoked" {
			t.Fatalf("%s: got closed=%v code=%d reason=%q, want 4001 %q", name, closed, code, reason, "identity revoked")
		}
	}
	for name, c := range map[string]*rpctest.Conn{"bob": bobs, "anonymous": anon} {
		if closed, _, _ := c.Closed(); closed {
			t.Fatalf("%s was closed", name)
		}
	}
	if got := revoke(`{"n":1,"user":"alice"}`); got != "0" {
		t.Fatalf("second disconnectIdentity: got %s, want 0", got)
	}
	// The transport then reports the closed connections gone.
	e.front.Disconnect(phone)
	e.front.Disconnect(laptop)
	for _, id := range []string{`null`, `"nobody"`} {
		if got := revoke(id); got != "0" {
			t.Fatalf("disconnectIdentity %s: got %s, want 0", id, got)
		}
	}
	if r := rpctest.Call(t, e.back, e.backendCn, "identity_backend", "disconnectIdentity", `{}`); r.Err() != "Invalid params" {
		t.Fatalf("without identity: got %s, want Invalid params", r.Raw)
	}
	if got := revoke(`{"user":"bob","n":1}`); got != "1" {
		t.Fatalf("disconnectIdentity bob: got %s, want 1", got)
	}
}

func TestAuthenticateToken(t *testing.T) {
	e := newEnv(t, Config{})
	tok := e.authorize(`{"identity":"alice","ttl":10}`)
	for _, tc := range []struct {
		name       string
		tok        string
		after      time.Duration
		want       error
		wantReason string
	}{
		{"valid", tok, 0, nil, ""},
		{"expired", tok, 10 * time.Second, ErrURLTokenExpired, "identity token expired"},
		{"tampered", tamper(tok), 0, ErrURLTokenInvalid, "invalid identity token"},
		{"empty", "", 0, ErrURLTokenInvalid, "invalid identity token"},
		{"subscription token", e.signer.Sign("subscription", []byte(`"alice"`), t0.Add(time.Hour)), 0, ErrURLTokenInvalid, "invalid identity token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.now = t0.Add(tc.after)
			c := rpctest.NewConn()
			err := e.dir.AuthenticateToken(c, tc.tok)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err != nil {
				if err.Error() != tc.wantReason {
					t.Fatalf("close reason: got %q, want %q", err.Error(), tc.wantReason)
				}
				if c.Identity() != nil {
					t.Fatalf("identity set after %v", err)
				}
				return
			}
			if got := string(c.Identity().JSON); got != `"alice"` {
				t.Fatalf("identity: got %s, want \"alice\"", got)
			}
			if err := e.dir.AuthenticateToken(c, tc.tok); !errors.Is(err, ErrAlreadySet) {
				t.Fatalf("twice: got %v, want %v", err, ErrAlreadySet)
			}
			if r := e.authenticate(c, tc.tok); r.Err() != "Identity already set" {
				t.Fatalf("authenticate after the URL token: got %s", r.Raw)
			}
		})
	}
}

func TestIssue(t *testing.T) {
	e := newEnv(t, Config{})
	for _, tc := range []struct {
		name     string
		identity string
		ttl      time.Duration
		ok       bool
	}{
		{"value", `{"a": 1}`, time.Minute, true},
		{"default ttl", `"x"`, 0, true},
		{"null", `null`, 0, false},
		{"not JSON", `{`, 0, false},
		{"negative ttl", `"x"`, -time.Second, false},
	} {
		if _, err := e.dir.Issue(json.RawMessage(tc.identity), tc.ttl); (err == nil) != tc.ok {
			t.Errorf("%s: got %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestConfig(t *testing.T) {
	signer, _ := token.New(secret)
	if _, err := New(nil, Config{}); err == nil {
		t.Error("New(nil signer): got nil error")
	}
	if _, err := New(signer, Config{DefaultTTL: -time.Second}); err == nil {
		t.Error("negative DefaultTTL: got nil error")
	}
	if err := (Config{DefaultTTL: time.Minute}).Validate(); err != nil {
		t.Errorf("Validate: got %v", err)
	}
	if got := (Config{}).withDefaults().DefaultTTL; got != 24*time.Hour {
		t.Errorf("zero DefaultTTL: got %v, want 24h", got)
	}
}
