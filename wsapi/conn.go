package wsapi

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// conn is one WebSocket connection; it implements rpc.Conn.
type conn struct {
	id uint64
	ws *websocket.Conn
	h  *Handler

	identity atomic.Pointer[rpc.Identity]
	pingDue  atomic.Bool
	aborted  atomic.Bool // the send queue overflowed
	lim      connLimits  // idle and authentication deadlines (idle.go)

	mu     sync.Mutex
	queue  [][]byte
	latest map[string]int // SendLatest key → index in queue
	queued int            // bytes in queue
	// closeCode is set once the connection is closing; the writer then
	// sends a close frame and ends. flush says whether queued frames are
	// written first.
	closeCode   int
	closeReason string
	flush       bool
	readerDone  bool

	wake chan struct{}
	done chan struct{} // closed when the writer has ended
}

func newConn(h *Handler, ws *websocket.Conn) *conn {
	return &conn{
		id:   rpc.NewConnID(),
		ws:   ws,
		h:    h,
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
}

func (c *conn) ID() uint64 { return c.id }

func (c *conn) Identity() *rpc.Identity { return c.identity.Load() }

func (c *conn) SetIdentity(id *rpc.Identity) bool {
	return c.identity.CompareAndSwap(nil, id)
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Send queues frame; see rpc.Conn.
func (c *conn) Send(frame []byte) {
	c.mu.Lock()
	if c.closeCode != 0 {
		c.mu.Unlock()
		return
	}
	if c.queued+len(frame) > c.h.cfg.SendQueueBytes {
		c.overflowLocked()
		c.mu.Unlock()
		c.abortWrite()
		return
	}
	wasEmpty := len(c.queue) == 0
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
	c.mu.Unlock()
	if wasEmpty {
		c.signal()
	}
}

// SendMany queues frames with nothing between them; if they do not all fit,
// the connection is a slow consumer.
func (c *conn) SendMany(frames [][]byte) {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	c.mu.Lock()
	if c.closeCode != 0 {
		c.mu.Unlock()
		return
	}
	if c.queued+n > c.h.cfg.SendQueueBytes {
		c.overflowLocked()
		c.mu.Unlock()
		c.abortWrite()
		return
	}
	wasEmpty := len(c.queue) == 0
	c.queue = append(c.queue, frames...)
	c.queued += n
	c.mu.Unlock()
	if wasEmpty {
		c.signal()
	}
}

// SendLatest queues frame, replacing a frame queued under key and not yet
// written.
func (c *conn) SendLatest(key string, frame []byte) {
	c.mu.Lock()
	if c.closeCode != 0 {
		c.mu.Unlock()
		return
	}
	if i, ok := c.latest[key]; ok {
		c.queued += len(frame) - len(c.queue[i])
		c.queue[i] = frame
		if c.queued > c.h.cfg.SendQueueBytes {
			c.overflowLocked()
			c.mu.Unlock()
			c.abortWrite()
			return
		}
		c.mu.Unlock()
		return
	}
	if c.queued+len(frame) > c.h.cfg.SendQueueBytes {
		c.overflowLocked()
		c.mu.Unlock()
		c.abortWrite()
		return
	}
	if c.latest == nil {
		c.latest = make(map[string]int)
	}
	c.latest[key] = len(c.queue)
	wasEmpty := len(c.queue) == 0
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
	c.mu.Unlock()
	if wasEmpty {
		c.signal()
	}
}

// abortWrite wakes the writer, ending a write blocked on a full socket at
// once: a slow consumer is dropped without waiting for the write timeout.
func (c *conn) abortWrite() {
	c.aborted.Store(true)
	c.ws.NetConn().SetWriteDeadline(time.Now())
	c.signal()
}

func (c *conn) overflowLocked() {
	c.closeCode, c.closeReason, c.flush = rpc.CloseSlowConsumer, rpc.ReasonSlowConsumer, false
	c.queue, c.latest, c.queued = nil, nil, 0
	c.h.metrics.slowConsumers.Inc()
	c.h.log.Warn("closing slow consumer", "conn", c.id, "send_queue_bytes", c.h.cfg.SendQueueBytes)
}

// Close asks the writer to write what is queued, then a close frame.
func (c *conn) Close(code int, reason string) {
	c.mu.Lock()
	if c.closeCode == 0 {
		c.closeCode, c.closeReason, c.flush = code, reason, true
	}
	c.mu.Unlock()
	c.signal()
}

// readerGone tells the writer that the peer is gone: nothing more is
// written.
func (c *conn) readerGone() {
	c.mu.Lock()
	c.readerDone = true
	c.queue, c.latest, c.queued = nil, nil, 0
	c.mu.Unlock()
	c.signal()
}

// queuedBytes is for the send-queue metric.
func (c *conn) queuedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued
}

// pingFrame is a final, unmasked ping frame without payload (RFC 6455).
var pingFrame = []byte{0x89, 0x00}

var errSlowConsumer = errors.New("slow consumer")

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// writeLoop is the connection's writer goroutine.
func (c *conn) writeLoop() {
	defer close(c.done)
	var spare [][]byte
	for {
		<-c.wake
		c.mu.Lock()
		frames := c.queue
		c.queue, c.latest, c.queued = spare[:0], nil, 0
		code, reason, flush, gone := c.closeCode, c.closeReason, c.flush, c.readerDone
		c.mu.Unlock()

		if gone {
			return
		}
		if len(frames) > 0 && (code == 0 || flush) {
			if err := c.writeFrames(frames); err != nil {
				c.ws.NetConn().Close()
				return
			}
		}
		clear(frames)
		spare = frames
		if cap(spare) > 1024 {
			spare = nil // do not keep a burst's slice for an idle connection
		}
		if code != 0 {
			msg := websocket.FormatCloseMessage(code, reason)
			if !flush {
				// A slow consumer reads nothing: try the close frame
				// briefly, then drop the connection.
				c.writeSlowClose(nil) // slowclose.go
				c.ws.NetConn().Close()
				return
			}
			_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(c.h.cfg.WriteTimeout))
			// The reader sees the peer's close reply (or the timeout) and ends.
			c.ws.NetConn().SetReadDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
			return
		}
		if c.pingDue.Swap(false) {
			// An empty ping is two bytes; written directly, it needs no
			// buffer and keeps the idle writer's stack small.
			nc := c.ws.NetConn()
			nc.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
			if _, err := nc.Write(pingFrame); err != nil {
				nc.Close()
				return
			}
		}
	}
}

// writeFrames writes each frame as one unmasked text message, all in one
// write.
func (c *conn) writeFrames(frames [][]byte) error {
	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:0]
	for _, f := range frames {
		buf = appendFrameHeader(buf, len(f))
		buf = append(buf, f...)
	}
	nc := c.ws.NetConn()
	nc.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
	var err error
	if c.aborted.Load() {
		err = errSlowConsumer // overflowed before the deadline was set
		c.writeSlowClose(nil)
	} else {
		var n int
		if n, err = nc.Write(buf); err != nil && c.aborted.Load() {
			c.writeSlowClose(frameRest(buf, n)) // slowclose.go
		}
	}
	c.h.metrics.countOut(frames)
	if cap(buf) <= 256<<10 {
		*bp = buf
		bufPool.Put(bp)
	}
	return err
}

// appendFrameHeader appends the header of a final, unmasked text frame
// (RFC 6455 §5.2).
func appendFrameHeader(b []byte, n int) []byte {
	const finText = 0x81
	switch {
	case n < 126:
		return append(b, finText, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, finText, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, finText, 127), uint64(n))
	}
}
