package relay

import (
	"encoding/binary"
	"errors"
)

// A frame is two byte strings in one NATS payload: the first's length as a
// uvarint, the first, then the second. PubSub frames the channel and the
// message; Messaging the destination and the notification.

func appendFrame(b, first, second []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(first)))
	b = append(b, first...)
	return append(b, second...)
}

var errFrame = errors.New("malformed frame")

func splitFrame(b []byte) (first, second []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, errFrame
	}
	b = b[k:]
	return b[:n:n], b[n:], nil
}
