// Package token signs and verifies the opaque bearer tokens that Snorky
// hands out: subscription tokens (DataSync, spec D7) and identity tokens
// (spec D9).
//
// A token is base64url (no padding) of
//
//	version (1 byte) | expiry, Unix milliseconds (8 bytes, big endian) | payload | HMAC-SHA256 (32 bytes)
//
// The MAC key is derived from the configured secret and the token's purpose
// (HMAC(secret, purpose)), so a token signed for one purpose never verifies
// for another: an identity token is not a subscription token and the other
// way round. The payload is readable by anyone holding the token; it is
// signed, not encrypted. Tokens carry no purpose or key identifier.
//
// A Signer is safe for concurrent use. It keeps no state besides a cache of
// derived keys, so every server sharing the secret verifies every token.
package token
