package wsapi

import (
	"encoding/binary"
	"errors"
	"runtime"
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
	queue  []item
	latest map[string]int // SendLatest key → index in queue
	queued int            // bytes of the frames in queue
	// since is when the oldest item in queue was queued (zero when empty);
	// exempt says the queue began with a stream, which counts for neither
	// bytes nor lag: it is what the writer takes next.
	since time.Time
	// closing is set once the connection is closing; the writer then
	// sends its close frame and ends. flush says whether queued frames are
	// written first (false only for a slow consumer).
	closing    closeStatus
	flush      bool
	readerDone bool
	// echo is the close frame that answers the peer's (RFC 6455 §5.5.1),
	// which the writer sends once the reader is done, unless it sent a
	// close frame of its own first.
	echo closeStatus
	// writing says who holds the socket for writing: the writer goroutine,
	// or a write-through (writethrough.go). rest is the unwritten tail of a
	// write-through, which the writer writes before anything queued; its
	// first restFrame bytes complete a frame already started on the wire.
	writing   bool
	rest      []byte
	restFrame int
	raw       *rawWriter // nil: no write-through (TLS)
	// lastWrite is when the writer last took frames, or the last
	// write-through (writethrough.go: writeThroughIdle).
	lastWrite time.Time
	wtIdle    time.Duration // writeThroughIdle (tests change it)

	wake chan struct{}
	done chan struct{} // closed when the writer has ended
}

// item is one queued frame, or a stream of frames produced by the writer.
// A control item is a whole control frame, written as it is.
type item struct {
	frame   []byte
	stream  rpc.Stream
	control bool
}

func newConn(h *Handler, ws *websocket.Conn) *conn {
	return &conn{
		id:     rpc.NewConnID(),
		ws:     ws,
		h:      h,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		raw:    newRawWriter(ws.NetConn()),
		wtIdle: writeThroughIdle,
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

// behindLocked reports whether adding n bytes of frames makes the
// connection a slow consumer: more than SendQueueBytes waiting, or the
// oldest waiting item older than MaxLag (spec §3.10: how far behind the
// connection is, beyond what it is being sent).
func (c *conn) behindLocked(n int, now time.Time) bool {
	if c.queued+n > c.h.cfg.SendQueueBytes {
		return true
	}
	return !c.since.IsZero() && now.Sub(c.since) > c.h.cfg.MaxLag
}

// enqueueLocked appends items; the caller has checked the bounds.
func (c *conn) enqueueLocked(n int, now time.Time, items ...item) (wasEmpty bool) {
	wasEmpty = len(c.queue) == 0
	if wasEmpty {
		c.since = now
	}
	c.queue = append(c.queue, items...)
	c.queued += n
	return wasEmpty
}

// Send queues frame; see rpc.Conn.
func (c *conn) Send(frame []byte) {
	now := time.Now()
	c.mu.Lock()
	if c.closing.code != 0 {
		c.mu.Unlock()
		return
	}
	if c.behindLocked(len(frame), now) {
		c.overflowLocked()
		c.mu.Unlock()
		c.overflowed()
		return
	}
	wasEmpty := c.enqueueLocked(len(frame), now, item{frame: frame})
	c.mu.Unlock()
	if wasEmpty {
		c.signal()
	}
}

// SendMany queues frames with nothing between them; if they do not all fit,
// the connection is a slow consumer.
func (c *conn) SendMany(frames [][]byte) { c.sendMany(frames, false) }

// SendImmediate is SendMany, but writes the frames at once from the
// caller's goroutine when the connection is idle (rpc.ImmediateSender,
// writethrough.go).
func (c *conn) SendImmediate(frames ...[]byte) { c.sendMany(frames, true) }

func (c *conn) sendMany(frames [][]byte, through bool) {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	now := time.Now()
	c.mu.Lock()
	if c.closing.code != 0 {
		c.mu.Unlock()
		return
	}
	if c.behindLocked(n, now) {
		c.overflowLocked()
		c.mu.Unlock()
		c.overflowed()
		return
	}
	if through && c.writeThroughLocked(frames, n, now) {
		return
	}
	wasEmpty := len(c.queue) == 0
	if wasEmpty {
		c.since = now
	}
	for _, f := range frames {
		c.queue = append(c.queue, item{frame: f})
	}
	c.queued += n
	c.mu.Unlock()
	if wasEmpty {
		c.signal()
	}
}

// SendStream queues a stream (rpc.StreamSender). Its bytes do not count
// against SendQueueBytes: the frames are produced as the socket drains.
// Only the lag rule applies.
func (c *conn) SendStream(s rpc.Stream) {
	now := time.Now()
	c.mu.Lock()
	if c.closing.code != 0 {
		c.mu.Unlock()
		return
	}
	if c.behindLocked(0, now) {
		c.overflowLocked()
		c.mu.Unlock()
		c.overflowed()
		return
	}
	wasEmpty := c.enqueueLocked(0, now, item{stream: s})
	c.mu.Unlock()
	if wasEmpty {
		c.signal()
	}
}

// SendLatest queues frame, replacing a frame queued under key and not yet
// written.
func (c *conn) SendLatest(key string, frame []byte) {
	now := time.Now()
	c.mu.Lock()
	if c.closing.code != 0 {
		c.mu.Unlock()
		return
	}
	if i, ok := c.latest[key]; ok {
		c.queued += len(frame) - len(c.queue[i].frame)
		c.queue[i].frame = frame
		if c.queued > c.h.cfg.SendQueueBytes {
			c.overflowLocked()
			c.mu.Unlock()
			c.overflowed()
			return
		}
		c.mu.Unlock()
		return
	}
	if c.behindLocked(len(frame), now) {
		c.overflowLocked()
		c.mu.Unlock()
		c.overflowed()
		return
	}
	if c.latest == nil {
		c.latest = make(map[string]int)
	}
	c.latest[key] = len(c.queue)
	wasEmpty := c.enqueueLocked(len(frame), now, item{frame: frame})
	c.mu.Unlock()
	if wasEmpty {
		c.signal()
	}
}

// overflowed is called, without the lock, after overflowLocked. It counts
// the slow consumer and wakes the writer, ending a write blocked on a full
// socket at once: a slow consumer is dropped without waiting for the write
// timeout.
func (c *conn) overflowed() {
	c.h.metrics.slowConsumers.Inc()
	c.aborted.Store(true)
	c.ws.NetConn().SetWriteDeadline(time.Now())
	c.signal()
}

// overflowLocked marks the connection a slow consumer and drops its queue.
// It neither logs nor touches the socket: the caller unlocks, then calls
// abortWrite, and the writer goroutine logs (off the broadcast path).
func (c *conn) overflowLocked() {
	c.closing, c.flush = slowConsumer, false
	c.queue, c.latest, c.queued, c.since = nil, nil, 0, time.Time{}
}

// stillOpen reports whether the connection is not closing (Close, or a
// slow-consumer overflow), and then moves the read deadline renew ahead
// (0: leaves it). A closing connection keeps the writer's close deadline:
// the lock orders the two, as Close sets closing under it before the
// writer sets its deadline.
func (c *conn) stillOpen(renew time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing.code != 0 {
		return false
	}
	if renew > 0 {
		c.ws.SetReadDeadline(time.Now().Add(renew))
	}
	return true
}

// Close asks the writer to write what is queued, then a close frame.
func (c *conn) Close(code int, reason string) {
	c.mu.Lock()
	if c.closing.code == 0 {
		c.closing, c.flush = closeStatus{code, reason}, true
	}
	c.mu.Unlock()
	c.signal()
}

// sendPong queues the pong answering a ping from the peer (RFC 6455
// §5.5.3). It goes through the queue, like every frame, so that it never
// lands inside a frame that a write-through started; gorilla's default
// ping handler would write it directly.
func (c *conn) sendPong(data string) {
	f := make([]byte, 0, 2+len(data))
	f = append(f, 0x8A, byte(len(data))) // final pong, unmasked; len(data) ≤ 125
	f = append(f, data...)
	c.mu.Lock()
	if c.closing.code != 0 || c.readerDone {
		c.mu.Unlock()
		return
	}
	wasEmpty := c.enqueueLocked(len(f), time.Now(), item{frame: f, control: true})
	c.mu.Unlock()
	if wasEmpty {
		c.signal()
	}
}

// peerClosed records the answer to the peer's close frame: its status
// code, as RFC 6455 suggests (no payload when it sent none).
func (c *conn) peerClosed(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing.code == 0 {
		c.echo = closeStatus{code: code}
	}
}

// readerGone tells the writer that the peer is gone: nothing more is
// written.
func (c *conn) readerGone() {
	c.mu.Lock()
	c.readerDone = true
	c.queue, c.latest, c.queued, c.since = nil, nil, 0, time.Time{}
	c.mu.Unlock()
	c.signal()
}

// queuedBytes is for the send-queue metric.
func (c *conn) queuedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued
}

// slowConsumerClosed logs the end of a slow consumer, from the writer
// goroutine as it drops the connection.
func (c *conn) slowConsumerClosed() {
	c.h.log.Warn("closing slow consumer", "conn", c.id, "send_queue_bytes", c.h.cfg.SendQueueBytes)
}

// pingFrame is a final, unmasked ping frame without payload (RFC 6455).
var pingFrame = []byte{0x89, 0x00}

var errSlowConsumer = errors.New("slow consumer")

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// writeLoop is the connection's writer goroutine.
func (c *conn) writeLoop() {
	defer close(c.done)
	var spare []item
	for {
		<-c.wake
		c.mu.Lock()
		if len(c.queue) < busyFrames && time.Since(c.lastWrite) < busyWindow {
			// A busy connection woken for a frame or two: let the
			// goroutines delivering to it run first, so that one write
			// carries more frames (PubSub with a window of publishes in
			// flight: 17–20% less CPU per delivery at 1,000
			// subscribers, BENCHMARKS.md).
			c.mu.Unlock()
			runtime.Gosched()
			c.mu.Lock()
		}
		if c.writing {
			// A write-through holds the socket; it wakes the writer
			// when it is done and something is left to do.
			c.mu.Unlock()
			continue
		}
		frames, rest, restFrame := c.queue, c.rest, c.restFrame
		c.queue, c.latest, c.queued, c.since = spare[:0], nil, 0, time.Time{}
		c.rest, c.restFrame = nil, 0
		closing, flush, gone, echo := c.closing, c.flush, c.readerDone, c.echo
		c.writing = true
		if len(frames) > 0 || rest != nil {
			c.lastWrite = time.Now()
		}
		c.mu.Unlock()

		if gone {
			if echo.code != 0 {
				// Answer the peer's close on a frame boundary.
				c.writeCloseNow(rest[:restFrame], echo)
			}
			return
		}
		if (len(frames) > 0 || rest != nil) && (closing.code == 0 || flush) {
			if err := c.writeFrames(rest, restFrame, frames); err != nil {
				if c.aborted.Load() {
					c.slowConsumerClosed()
				}
				c.ws.NetConn().Close()
				return
			}
		}
		clear(frames)
		spare = frames
		if cap(spare) > 1024 {
			spare = nil // do not keep a burst's slice for an idle connection
		}
		if closing.code != 0 {
			if !flush {
				// A slow consumer reads nothing: try the close frame
				// briefly, then drop the connection.
				c.slowConsumerClosed()
				c.writeCloseNow(rest[:restFrame], slowConsumer) // slowclose.go
				c.ws.NetConn().Close()
				return
			}
			_ = c.ws.WriteControl(websocket.CloseMessage, closing.message(), time.Now().Add(c.h.cfg.WriteTimeout))
			// The reader sees the peer's close reply (or the timeout) and ends.
			c.ws.NetConn().SetReadDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
			return
		}
		if c.pingDue.Swap(false) {
			// An empty ping is two bytes; written directly, it needs no
			// buffer and keeps the idle writer's stack small.
			nc := c.ws.NetConn()
			w := 0
			if c.raw != nil {
				w = c.raw.try(pingFrame)
			}
			if w < len(pingFrame) {
				nc.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
				if _, err := nc.Write(pingFrame[w:]); err != nil {
					nc.Close()
					return
				}
			}
		}
		c.mu.Lock()
		c.writing = false
		c.mu.Unlock()
	}
}

// busyWindow and busyFrames define a busy connection for the writer: it
// wrote less than busyWindow ago and has fewer than busyFrames queued when
// woken; it then yields once before writing. An idle connection's frame
// is written at once.
const (
	busyWindow = 2 * time.Millisecond
	busyFrames = 4
)

// writeChunk is the size at which the writer writes what it has built,
// so that a stream never needs more than about this much buffer.
const writeChunk = 256 << 10

// writeFrames writes rest (the tail of a write-through, whose first
// restFrame bytes complete a started frame), then each item as one
// unmasked text message, streams frame by frame, in writes of about
// writeChunk bytes.
func (c *conn) writeFrames(rest []byte, restFrame int, items []item) error {
	bp := bufPool.Get().(*[]byte)
	buf := append((*bp)[:0], rest...)
	// head is how many bytes at the start of buf complete a frame started
	// earlier: only the first write begins mid-frame.
	head := restFrame
	var scratch []byte
	nc := c.ws.NetConn()
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		if c.pingDue.Swap(false) {
			// A long stream must not starve pings: the peer's pongs keep
			// the read deadline alive (a ping may follow any whole
			// message, RFC 6455 §5.5).
			buf = append(buf, pingFrame...)
		}
		// First one raw non-blocking write (rawWriter.try): most writes fit in
		// the socket's buffer and then need neither a deadline nor the
		// scheduler's system-call bookkeeping. What is left is written
		// under the write deadline.
		n := 0
		if c.raw != nil && len(buf) <= maxWriteThrough && !c.aborted.Load() {
			n = c.raw.try(buf)
		}
		var err error
		if n < len(buf) {
			nc.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
			if c.aborted.Load() {
				err = errSlowConsumer // overflowed before the deadline was set
			} else {
				var m int
				m, err = nc.Write(buf[n:])
				n += m
			}
		}
		if err != nil && c.aborted.Load() {
			// slowclose.go: complete the frame, then 4008
			if n < head {
				c.writeCloseNow(buf[n:head], slowConsumer)
			} else {
				c.writeCloseNow(frameRest(buf[head:], n-head), slowConsumer)
			}
		}
		buf, head = buf[:0], 0
		return err
	}
	var err error
	for _, it := range items {
		if it.control {
			buf = append(buf, it.frame...)
		} else if it.stream == nil {
			buf = appendFrameHeader(buf, len(it.frame))
			buf = append(buf, it.frame...)
			c.h.metrics.countOut(it.frame)
		} else {
			for {
				f, ok := it.stream.Next(scratch[:0])
				if !ok {
					break
				}
				scratch = f
				buf = appendFrameHeader(buf, len(f))
				buf = append(buf, f...)
				c.h.metrics.countOut(f)
				if len(buf) >= writeChunk {
					if err = flush(); err != nil {
						break
					}
				}
			}
		}
		if err != nil {
			break
		}
		if len(buf) >= writeChunk {
			if err = flush(); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = flush()
	}
	if cap(buf) <= 512<<10 {
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
