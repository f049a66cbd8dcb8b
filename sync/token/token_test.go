package token

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	testSecret = []byte("0123456789abcdef-test-secret")
	t0         = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
)

func mustSigner(t testing.TB, secret []byte) *Signer {
	t.Helper()
	s, err := New(secret)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestNewRefusesShortSecret(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secret []byte
		ok     bool
	}{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"15 bytes", bytes.Repeat([]byte("x"), 15), false},
		{"16 bytes", bytes.Repeat([]byte("x"), 16), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.secret)
			if got := err == nil; got != tc.ok {
				t.Fatalf("New(%d bytes): got err %v, want ok=%v", len(tc.secret), err, tc.ok)
			}
			if !tc.ok && (s != nil || !strings.Contains(err.Error(), "secret")) {
				t.Fatalf("got (%v, %q), want nil signer and an error naming the secret", s, err)
			}
		})
	}
}

func TestNewCopiesSecret(t *testing.T) {
	secret := append([]byte(nil), testSecret...)
	s := mustSigner(t, secret)
	tok := s.Sign("p", []byte("x"), t0.Add(time.Hour))
	secret[0] ^= 0xff
	if _, err := s.Verify("p", tok, t0); err != nil {
		t.Fatalf("after changing the caller's slice: got %v, want nil", err)
	}
}

// flip returns tok with the byte at i of its decoded form changed.
func flip(t *testing.T, tok string, i int) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(raw)
	}
	raw[i] ^= 0x01
	return base64.RawURLEncoding.EncodeToString(raw)
}

func TestVerify(t *testing.T) {
	s := mustSigner(t, testSecret)
	other := mustSigner(t, []byte("another-secret-of-enough-bytes"))
	payload := []byte(`{"user":"alice"}`)
	exp := t0.Add(time.Minute)
	tok := s.Sign("identity", payload, exp)

	for _, tc := range []struct {
		name    string
		purpose string
		tok     string
		now     time.Time
		want    error
	}{
		{"valid", "identity", tok, t0, nil},
		{"valid 1ms before expiry", "identity", tok, exp.Add(-time.Millisecond), nil},
		{"expired at expiry", "identity", tok, exp, ErrExpired},
		{"expired later", "identity", tok, exp.Add(time.Hour), ErrExpired},
		{"wrong purpose", "subscription", tok, t0, ErrInvalid},
		{"other secret", "identity", other.Sign("identity", payload, exp), t0, ErrInvalid},
		{"tampered version", "identity", flip(t, tok, 0), t0, ErrInvalid},
		{"tampered expiry", "identity", flip(t, tok, 8), t0, ErrInvalid},
		{"tampered payload", "identity", flip(t, tok, 10), t0, ErrInvalid},
		{"tampered mac", "identity", flip(t, tok, -1), t0, ErrInvalid},
		{"truncated by one", "identity", tok[:len(tok)-1], t0, ErrInvalid},
		{"truncated to header", "identity", tok[:12], t0, ErrInvalid},
		{"empty", "identity", "", t0, ErrInvalid},
		{"padding added", "identity", tok + "=", t0, ErrInvalid},
		{"standard base64 alphabet", "identity", strings.NewReplacer("-", "+", "_", "/").Replace(tok) + "+", t0, ErrInvalid},
		{"whitespace", "identity", " " + tok, t0, ErrInvalid},
		{"newline inside", "identity", tok[:20] + "\n" + tok[20:], t0, ErrInvalid},
		{"expired and tampered", "identity", flip(t, tok, 10), exp.Add(time.Hour), ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Verify(tc.purpose, tc.tok, tc.now)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got error %v, want nil", err)
				}
				if !bytes.Equal(got, payload) {
					t.Fatalf("got payload %q, want %q", got, payload)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got error %v, want %v", err, tc.want)
			}
			switch {
			case errors.Is(err, ErrExpired) && !bytes.Equal(got, payload):
				t.Fatalf("expired: got payload %q, want the genuine token's %q", got, payload)
			case !errors.Is(err, ErrExpired) && got != nil:
				t.Fatalf("got payload %q with error %v, want nil", got, err)
			}
		})
	}
}

func TestTokenIsURLSafe(t *testing.T) {
	s := mustSigner(t, testSecret)
	for _, payload := range [][]byte{nil, {}, []byte("\xff\xfe\xfd"), bytes.Repeat([]byte{0xfb}, 100)} {
		tok := s.Sign("p", payload, t0.Add(time.Hour))
		for _, r := range tok {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				t.Fatalf("token %q has character %q, want only [A-Za-z0-9_-]", tok, r)
			}
		}
		got, err := s.Verify("p", tok, t0)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("Verify: got (%q, %v), want (%q, nil)", got, err, payload)
		}
	}
}

func TestSignIsDeterministicAndPurposeBound(t *testing.T) {
	s := mustSigner(t, testSecret)
	exp := t0.Add(time.Hour)
	a := s.Sign("identity", []byte("x"), exp)
	if b := s.Sign("identity", []byte("x"), exp); a != b {
		t.Fatalf("same input: got %q and %q, want equal tokens", a, b)
	}
	if c := s.Sign("subscription", []byte("x"), exp); a == c {
		t.Fatalf("different purposes gave the same token %q", a)
	}
}

// FuzzVerify feeds arbitrary strings to Verify: it must not panic, and the
// only tokens that may verify are those the test signed itself.
func FuzzVerify(f *testing.F) {
	s := mustSigner(f, testSecret)
	exp := t0.Add(time.Hour)
	valid, expired := map[string]bool{}, map[string]bool{}
	for _, p := range []string{"", "x", `{"user":"alice"}`, `[{"dealer":"AllTasks","query":null}]`} {
		tok := s.Sign("identity", []byte(p), exp)
		valid[tok] = true
		f.Add(tok)
		f.Add(s.Sign("subscription", []byte(p), exp))
		old := s.Sign("identity", []byte(p), t0.Add(-time.Hour))
		expired[old] = true
		f.Add(old)
	}
	f.Add("")
	f.Add("AQ")
	f.Add(strings.Repeat("A", 55))
	f.Add(strings.Repeat("_", 200))
	f.Add("not a token at all")
	f.Fuzz(func(t *testing.T, tok string) {
		payload, err := s.Verify("identity", tok, t0)
		if err == nil && !valid[tok] {
			t.Fatalf("token %q verified with payload %q but was never signed", tok, payload)
		}
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrExpired) {
			t.Fatalf("got error %v, want ErrInvalid or ErrExpired", err)
		}
		if errors.Is(err, ErrExpired) && !expired[tok] {
			t.Fatalf("token %q reported expired (payload %q) but was never signed", tok, payload)
		}
		if errors.Is(err, ErrInvalid) && payload != nil {
			t.Fatalf("got payload %q with error %v", payload, err)
		}
	})
}

func BenchmarkSign(b *testing.B) {
	s := mustSigner(b, testSecret)
	payload := []byte(`{"user":"alice"}`)
	exp := t0.Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		s.Sign("identity", payload, exp)
	}
}

func BenchmarkVerify(b *testing.B) {
	s := mustSigner(b, testSecret)
	tok := s.Sign("identity", []byte(`{"user":"alice"}`), t0.Add(time.Hour))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Verify("identity", tok, t0); err != nil {
			b.Fatal(err)
		}
	}
}
