// Package rpc is the transport-neutral service layer of Snorky: the message
// envelope of the wire protocol (spec §1), the registry of named services, and
// the dispatch of a request to its service with the reply encoded as the
// protocol requires.
//
// A transport (wsapi, backendapi) hands every incoming message to
// Registry.Dispatch (WebSocket) or to Registry.Decode and Registry.Call
// (HTTP, which answers decode errors with a status code), and calls
// Registry.Disconnect once when a connection ends. Services never see the
// transport: they see a Conn, which can queue encoded frames without blocking.
//
// Invariants:
//   - Every well-formed request gets exactly one reply; the notifications it
//     causes are queued before the reply (services queue them inside Handle,
//     the reply is queued after Handle returns).
//   - callId is echoed byte for byte; it is omitted from a response when the
//     request had none or null, and null in an error in that case.
//   - Service names on the wire are configuration: a service is registered
//     under the name it is given.
package rpc
