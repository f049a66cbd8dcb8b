package wsapi

import (
	"encoding/binary"
	"time"

	"github.com/gorilla/websocket"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// closeStatus is a WebSocket close code with its reason: they travel
// together from whoever closes a connection to the writer that sends the
// close frame.
type closeStatus struct {
	code   int
	reason string
}

// slowConsumer is the close status of a connection whose send queue
// overflowed (spec §1.9).
var slowConsumer = closeStatus{rpc.CloseSlowConsumer, rpc.ReasonSlowConsumer}

// message is the close frame's payload (RFC 6455 §5.5.1).
func (s closeStatus) message() []byte { return websocket.FormatCloseMessage(s.code, s.reason) }

// slowCloseTimeout bounds the writing of a slow consumer's close frame. The
// queue is already dropped; this is the last chance for a peer that reads
// late to learn why it was closed (4008) rather than see the connection
// vanish (1006).
const slowCloseTimeout = 2 * time.Second

// maxFrameRest is the most of an interrupted frame writeCloseNow
// completes: a longer rest would not reach a peer that is not reading
// anyway.
const maxFrameRest = 256 << 10

// writeCloseNow writes a close frame with its own deadline, bypassing the
// queue: a slow consumer's 4008 (its queue dropped), or the answer to the
// peer's close. rest is the unwritten part of a data frame whose start was
// already written: it is completed first so that the close frame starts on
// a frame boundary. Only the writer goroutine calls it; the caller closes
// the socket after.
func (c *conn) writeCloseNow(rest []byte, st closeStatus) {
	if len(rest) > maxFrameRest {
		return
	}
	var msg []byte
	if st.code != websocket.CloseNoStatusReceived {
		msg = st.message()
	}
	out := make([]byte, 0, len(rest)+2+len(msg))
	out = append(out, rest...)
	out = append(out, 0x88, byte(len(msg))) // final close frame, unmasked; len(msg) < 126
	out = append(out, msg...)
	nc := c.ws.NetConn()
	nc.SetWriteDeadline(time.Now().Add(min(slowCloseTimeout, c.h.cfg.WriteTimeout)))
	nc.Write(out)
}

// frameRest returns the unwritten rest of the frame that the first n bytes
// of buf (whole frames, as writeFrames builds them) end in, or nil when n
// falls on a frame boundary.
func frameRest(buf []byte, n int) []byte {
	off := 0
	for off < len(buf) && off <= n {
		if off == n {
			return nil
		}
		hdr, size := 2, int(buf[off+1]&0x7f)
		switch size {
		case 126:
			hdr, size = 4, int(binary.BigEndian.Uint16(buf[off+2:]))
		case 127:
			hdr, size = 10, int(binary.BigEndian.Uint64(buf[off+2:]))
		}
		end := off + hdr + size
		if n < end {
			return buf[n:end]
		}
		off = end
	}
	return nil
}
