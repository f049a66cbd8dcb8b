package rpc

import "encoding/json"

// QuoteName returns a service name as JSON text, for AppendEnvelope.
func QuoteName(name string) []byte {
	q, _ := json.Marshal(name)
	return q
}

// AppendEnvelope appends {"service":<service>,"message":<message>} to dst.
// service is JSON text (QuoteName) or nil for null; message is JSON text.
func AppendEnvelope(dst, service, message []byte) []byte {
	dst = append(dst, `{"service":`...)
	dst = appendRawOrNull(dst, service)
	dst = append(dst, `,"message":`...)
	dst = append(dst, message...)
	return append(dst, '}')
}

// AppendResponse appends a response envelope. callID nil omits callId.
func AppendResponse(dst, service, callID, data []byte) []byte {
	dst = append(dst, `{"service":`...)
	dst = appendRawOrNull(dst, service)
	dst = append(dst, `,"message":{"type":"response",`...)
	if callID != nil {
		dst = append(dst, `"callId":`...)
		dst = append(dst, callID...)
		dst = append(dst, ',')
	}
	dst = append(dst, `"data":`...)
	dst = appendRawOrNull(dst, data)
	return append(dst, "}}"...)
}

// AppendError appends an error envelope; callID nil is sent as null.
func AppendError(dst, service, callID []byte, msg string) []byte {
	dst = append(dst, `{"service":`...)
	dst = appendRawOrNull(dst, service)
	dst = append(dst, `,"message":{"type":"error","callId":`...)
	dst = appendRawOrNull(dst, callID)
	dst = append(dst, `,"message":`...)
	m, _ := json.Marshal(msg)
	dst = append(dst, m...)
	return append(dst, "}}"...)
}

func appendRawOrNull(dst, raw []byte) []byte {
	if raw == nil {
		return append(dst, "null"...)
	}
	return append(dst, raw...)
}
