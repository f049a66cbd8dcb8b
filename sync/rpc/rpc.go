package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"unicode/utf8"
)

// Conn is one client connection as the services see it. Implementations are
// safe for concurrent use.
type Conn interface {
	// ID is unique among the connections of one process.
	ID() uint64
	// Send queues one encoded envelope. It never blocks; a connection whose
	// queue overflows is closed by its transport.
	Send(frame []byte)
	// SendLatest queues a frame that replaces a frame queued earlier with the
	// same key and not yet written (the newest wins). Transports without a
	// queue treat it as Send.
	SendLatest(key string, frame []byte)
	// Identity returns the connection's identity (spec §2.6) or nil.
	Identity() *Identity
	// SetIdentity sets the identity once; it reports false if one was set.
	SetIdentity(id *Identity) bool
	// Close closes the connection with a WebSocket close code and reason.
	Close(code int, reason string)
}

// BatchSender is implemented by connections that can queue several frames
// with nothing else between them (a transaction's deltas, spec §1.6).
type BatchSender interface {
	SendMany(frames [][]byte)
}

// SendMany queues frames on c contiguously when c supports it, else one by
// one.
func SendMany(c Conn, frames [][]byte) {
	if b, ok := c.(BatchSender); ok {
		b.SendMany(frames)
		return
	}
	for _, f := range frames {
		c.Send(f)
	}
}

// ImmediateSender is implemented by connections that can write frames at
// once, from the caller's goroutine, when nothing is queued for them (a
// write-through). It saves waking the connection's writer, at the cost of
// a system call made by the caller; it never blocks. It suits deliveries
// that reach a connection rarely (a delta routed to one of many
// subscriptions). A broadcast should queue (Send): each writer then batches
// what arrives while it wakes, which costs less per message.
type ImmediateSender interface {
	SendImmediate(frames ...[]byte)
}

// SendImmediate sends frames on c contiguously, written at once when c
// supports it and is idle, else queued as SendMany does.
func SendImmediate(c Conn, frames ...[]byte) {
	if s, ok := c.(ImmediateSender); ok {
		s.SendImmediate(frames...)
		return
	}
	if len(frames) == 1 {
		c.Send(frames[0])
		return
	}
	SendMany(c, frames)
}

// Stream is a sequence of frames produced on demand by the writer of a
// connection. A large transaction reaches a connection as a Stream, so that
// its frames are never held once per connection and it need not fit in the
// connection's send queue (spec §3.10). Next is called from the
// connection's writer goroutine only, and must not block.
type Stream interface {
	// Next appends the next frame to dst and returns the result; ok is
	// false when the stream has ended.
	Next(dst []byte) (frame []byte, ok bool)
}

// StreamSender is implemented by connections that can queue a Stream.
type StreamSender interface {
	SendStream(s Stream)
}

// SendStream queues s on c: as a stream when c supports it, else as its
// frames, contiguously.
func SendStream(c Conn, s Stream) {
	if ss, ok := c.(StreamSender); ok {
		ss.SendStream(s)
		return
	}
	var frames [][]byte
	for {
		f, ok := s.Next(nil)
		if !ok {
			break
		}
		frames = append(frames, f)
	}
	SendMany(c, frames)
}

// Identity is who a connection is: any JSON value, plus its canonical form
// (jsonval.Canonical) for use as a map key.
type Identity struct {
	JSON json.RawMessage
	Key  string
}

// Request is one decoded RPC request.
type Request struct {
	Command string
	// Params is the raw JSON object of the request's params.
	Params json.RawMessage
	// CallID is the raw JSON text of callId, nil when absent or null.
	CallID json.RawMessage
}

// Service handles the requests of one named service.
type Service interface {
	// Handle runs one command and returns its result, which is encoded with
	// encoding/json unless it is a json.RawMessage. Errors of type Error are
	// sent to the client as they are; any other error becomes
	// "Internal error" and is logged.
	Handle(c Conn, req *Request) (any, error)
}

// Disconnecter is implemented by services that keep per-connection state.
type Disconnecter interface {
	// Disconnected releases everything the connection held. It is called
	// once, after the connection's last request has been handled.
	Disconnected(c Conn)
}

// Error is a protocol error string, sent to the client verbatim.
type Error string

func (e Error) Error() string { return string(e) }

// The generic errors of spec §1.4.
const (
	ErrUnknownCommand Error = "Unknown command"
	ErrInvalidParams  Error = "Invalid params"
	ErrInternal       Error = "Internal error"
)

// Close codes of spec §1.9.
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseMessageTooBig   = 1009
	CloseInternalError   = 1011
	CloseIdentity        = 4001
	CloseSlowConsumer    = 4008
	CloseRateLimited     = 4029
	ReasonShuttingDown   = "server shutting down"
	ReasonSlowConsumer   = "slow consumer"
	ReasonRateLimited    = "rate limit exceeded"
	ReasonMessageTooBig  = "message too big"
	ReasonInternalError  = "internal error"
	ReasonIdentityRevoke = "identity revoked"
)

var nextConnID atomic.Uint64

// NewConnID returns a process-unique connection ID for transports.
func NewConnID() uint64 { return nextConnID.Add(1) }

// Observer receives counts for metrics; nil fields are skipped.
type Observer struct {
	// In is called once per request handed to a service.
	In func(service string)
}

// Registry is a set of named services: one per endpoint (frontend, backend).
type Registry struct {
	services map[string]*entry
	log      *slog.Logger
	observer Observer
}

type entry struct {
	name    string
	quoted  []byte // the name as JSON text
	service Service
}

// NewRegistry returns an empty registry that logs internal errors to log.
func NewRegistry(log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{services: map[string]*entry{}, log: log}
}

// SetObserver installs metric callbacks. Call it before serving.
func (r *Registry) SetObserver(o Observer) { r.observer = o }

// Register adds a service under name. It fails on a duplicate or empty name.
func (r *Registry) Register(name string, s Service) error {
	if name == "" {
		return errors.New("service name must not be empty")
	}
	if _, ok := r.services[name]; ok {
		return fmt.Errorf("service name %q is used twice", name)
	}
	q, _ := json.Marshal(name)
	r.services[name] = &entry{name: name, quoted: q, service: s}
	return nil
}

// Names returns the registered service names, sorted.
func (r *Registry) Names() []string {
	out := make([]string, 0, len(r.services))
	for n := range r.services {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Disconnect tells every service that c has gone.
func (r *Registry) Disconnect(c Conn) {
	for _, e := range r.services {
		if d, ok := e.service.(Disconnecter); ok {
			d.Disconnected(c)
		}
	}
}

// Call is a decoded request bound to its service.
type Call struct {
	entry *entry
	Req   Request
}

// Service returns the name of the called service.
func (c *Call) Service() string { return c.entry.name }

// DecodeError is malformed input (spec §1.7, D1).
type DecodeError struct {
	// Service is the raw JSON of the service name when it was readable,
	// else nil (sent as null).
	Service json.RawMessage
	// CallID is the raw callId when readable, else nil.
	CallID json.RawMessage
	// Message says what is wrong.
	Message string
}

func (e *DecodeError) Error() string { return e.Message }

// Decode parses one envelope and finds its service.
func (r *Registry) Decode(frame []byte) (*Call, *DecodeError) {
	if !utf8.Valid(frame) {
		return nil, &DecodeError{Message: "Invalid JSON: the message is not valid UTF-8"}
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(frame, &env); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return nil, &DecodeError{Message: "Invalid message: the envelope must be a JSON object with \"service\" and \"message\""}
		}
		return nil, &DecodeError{Message: "Invalid JSON: " + jsonErrText(err)}
	}
	if env == nil {
		return nil, &DecodeError{Message: "Invalid message: the envelope must be a JSON object with \"service\" and \"message\""}
	}
	rawSvc, ok := env["service"]
	if !ok {
		return nil, &DecodeError{Message: "Invalid message: missing \"service\""}
	}
	var name string
	if err := json.Unmarshal(rawSvc, &name); err != nil {
		return nil, &DecodeError{Message: "Invalid message: \"service\" must be a string"}
	}
	svcJSON := json.RawMessage(rawSvc)
	rawMsg, ok := env["message"]
	if !ok {
		return nil, &DecodeError{Service: svcJSON, Message: "Invalid message: missing \"message\""}
	}
	e, ok := r.services[name]
	if !ok {
		return nil, &DecodeError{Service: svcJSON, Message: fmt.Sprintf("Unknown service '%s'", name)}
	}
	svcJSON = e.quoted
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(rawMsg, &msg); err != nil || msg == nil {
		return nil, &DecodeError{Service: svcJSON, Message: "Invalid message: \"message\" must be a JSON object"}
	}
	callID := msg["callId"]
	if string(callID) == "null" {
		callID = nil
	}
	rawCmd, ok := msg["command"]
	if !ok {
		return nil, &DecodeError{Service: svcJSON, CallID: callID, Message: "Invalid message: missing \"command\""}
	}
	params, ok := msg["params"]
	if !ok {
		return nil, &DecodeError{Service: svcJSON, CallID: callID, Message: "Invalid message: missing \"params\""}
	}
	call := &Call{entry: e, Req: Request{Params: params, CallID: callID}}
	// A command that is not a string is "Unknown command" (spec §1.4), so
	// leave Command empty: no service declares "".
	_ = json.Unmarshal(rawCmd, &call.Req.Command)
	return call, nil
}

func jsonErrText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	return err.Error()
}

// Run handles a decoded call for c and returns the encoded reply envelope.
func (r *Registry) Run(c Conn, call *Call) []byte {
	if r.observer.In != nil {
		r.observer.In(call.entry.name)
	}
	var (
		result any
		err    error
	)
	if call.Req.Command == "" {
		err = ErrUnknownCommand
	} else if !isObject(call.Req.Params) {
		err = ErrInvalidParams
	} else {
		result, err = r.safeHandle(c, call)
	}
	if err != nil {
		var pe Error
		if !errors.As(err, &pe) {
			r.log.Error("command failed", "service", call.entry.name, "command", call.Req.Command, "conn", c.ID(), "err", err)
			pe = ErrInternal
		}
		return AppendError(nil, call.entry.quoted, call.Req.CallID, string(pe))
	}
	data, err := encodeResult(result)
	if err != nil {
		r.log.Error("encoding result", "service", call.entry.name, "command", call.Req.Command, "err", err)
		return AppendError(nil, call.entry.quoted, call.Req.CallID, string(ErrInternal))
	}
	return AppendResponse(nil, call.entry.quoted, call.Req.CallID, data)
}

func (r *Registry) safeHandle(c Conn, call *Call) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return call.entry.service.Handle(c, &call.Req)
}

// Dispatch decodes one frame from c, runs it, and queues the reply on c.
// Malformed input is answered with an error envelope (D1).
func (r *Registry) Dispatch(c Conn, frame []byte) {
	call, derr := r.Decode(frame)
	if derr != nil {
		c.Send(AppendError(nil, derr.Service, derr.CallID, derr.Message))
		return
	}
	c.Send(r.Run(c, call))
}

func isObject(raw json.RawMessage) bool {
	for _, b := range raw {
		switch b {
		case ' ', '\t', '\n', '\r':
			continue
		case '{':
			return true
		default:
			return false
		}
	}
	return false
}

func encodeResult(v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return []byte("null"), nil
	case json.RawMessage:
		if x == nil {
			return []byte("null"), nil
		}
		return x, nil
	default:
		return json.Marshal(v)
	}
}
