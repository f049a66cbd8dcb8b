package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// MinSecretLen is the shortest secret New accepts, in bytes.
const MinSecretLen = 16

// Sentinel errors of Verify; test with errors.Is.
var (
	// ErrInvalid is a malformed or tampered token, or one signed for
	// another purpose or with another secret.
	ErrInvalid = errors.New("invalid token")
	// ErrExpired is a genuine token past its expiry.
	ErrExpired = errors.New("token expired")
)

const (
	version   = 1
	headerLen = 1 + 8
	macLen    = sha256.Size
)

var encoding = base64.RawURLEncoding.Strict()

// Signer signs and verifies tokens with one secret.
type Signer struct {
	secret []byte
	keys   sync.Map // purpose string → derived key []byte
}

// New returns a Signer for secret, which it copies. It refuses a secret
// shorter than MinSecretLen bytes.
func New(secret []byte) (*Signer, error) {
	if len(secret) == 0 {
		return nil, fmt.Errorf("token secret is empty: configure a random secret of at least %d bytes", MinSecretLen)
	}
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("token secret is %d bytes long: it must be at least %d bytes", len(secret), MinSecretLen)
	}
	return &Signer{secret: append([]byte(nil), secret...)}, nil
}

// key returns the MAC key for purpose. Purposes are constants of the code,
// so the cache stays small.
func (s *Signer) key(purpose string) []byte {
	if k, ok := s.keys.Load(purpose); ok {
		return k.([]byte)
	}
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("snorky token key\x00"))
	m.Write([]byte(purpose))
	k := m.Sum(nil)
	s.keys.Store(purpose, k)
	return k
}

// Sign returns a token for purpose that carries payload and is valid until
// expires (millisecond precision). The token is URL- and header-safe.
func (s *Signer) Sign(purpose string, payload []byte, expires time.Time) string {
	n := headerLen + len(payload)
	buf := make([]byte, n, n+macLen)
	buf[0] = version
	binary.BigEndian.PutUint64(buf[1:headerLen], uint64(expires.UnixMilli()))
	copy(buf[headerLen:], payload)
	m := hmac.New(sha256.New, s.key(purpose))
	m.Write(buf)
	buf = m.Sum(buf)
	return encoding.EncodeToString(buf)
}

// Verify checks that tok was signed by this Signer's secret for purpose and
// has not expired at now, and returns its payload. Errors wrap ErrInvalid or
// ErrExpired. The MAC is compared in constant time, and checked before the
// expiry, so an expired token is reported only when it is genuine; with
// ErrExpired the payload is returned too (a genuine token still names what
// it was issued for).
func (s *Signer) Verify(purpose, tok string, now time.Time) ([]byte, error) {
	if encoding.DecodedLen(len(tok)) < headerLen+macLen {
		return nil, fmt.Errorf("%w: too short", ErrInvalid)
	}
	// The decoder skips '\r' and '\n'; accept nothing but the alphabet, so
	// that one token has exactly one spelling.
	for i := 0; i < len(tok); i++ {
		if !isAlphabet(tok[i]) {
			return nil, fmt.Errorf("%w: not base64url", ErrInvalid)
		}
	}
	raw, err := encoding.DecodeString(tok)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64url", ErrInvalid)
	}
	if len(raw) < headerLen+macLen || raw[0] != version {
		return nil, fmt.Errorf("%w: unknown format", ErrInvalid)
	}
	body, sum := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	m := hmac.New(sha256.New, s.key(purpose))
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), sum) {
		return nil, fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	exp := int64(binary.BigEndian.Uint64(body[1:headerLen]))
	if now.UnixMilli() >= exp {
		return body[headerLen:], ErrExpired
	}
	return body[headerLen:], nil
}

func isAlphabet(b byte) bool {
	return b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_'
}
