// Package identity gives connections an identity (spec §2.6, D9): the
// backend service that issues signed identity tokens and revokes identities
// (identity_backend), the frontend service that accepts a token
// (identity), and AuthenticateToken for a transport's ?token= parameter.
//
// An identity is any JSON value except null. Identity tokens are signed by a
// token.Signer for the purpose TokenPurpose, so they are never accepted as
// subscription tokens and the other way round. The token's payload is the
// identity's compact JSON text.
//
// The Directory of connections by identity (canonical JSON) is updated when
// an identity is set (here, the only place identities are set) and when a
// connection goes (Frontend implements rpc.Disconnecter); disconnectIdentity
// reads it. All methods are safe for concurrent use; no lock is held while
// a connection is closed.
//
// In a cluster, SetRemote makes disconnectIdentity close the identity's
// connections on the other nodes too (package relay), whose counts it
// adds to the reply.
package identity
