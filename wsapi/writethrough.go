package wsapi

import (
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// The write-through fast path (issue 15). When a connection has nothing
// queued, its writer is not writing and nothing was written to it lately,
// SendImmediate (rpc.ImmediateSender: the DataSync engine's deliveries)
// writes the frames from the caller's goroutine with one non-blocking
// write system call: no writer wake-up, no queue. Send, SendMany and
// SendLatest always queue: a broadcast (PubSub) costs less per delivery
// when each writer batches what arrived while it woke (measured in
// BENCHMARKS.md).
// Whatever the socket does not take at once (EAGAIN, a partial write) goes
// to the writer goroutine, ahead of anything queued after it, so the bytes
// on the wire stay in order and a transaction's frames stay contiguous. The
// delivering goroutine never waits for the socket.
//
// Only a plain TCP (or Unix) socket qualifies: a TLS connection must encrypt
// through crypto/tls, so its frames always go through the writer.
//
// The socket has one writer at a time: conn.writing is claimed, under
// conn.mu, by the writer goroutine for its writes and by a fast-path write
// for its one system call (made after unlocking). A writer woken while a
// fast path holds the claim waits; the fast path wakes it on release when
// there is something to do.

// writeThroughIdle is how long a connection must have had nothing written
// for a write-through. A connection that gets messages more often than
// this is left to its writer, which writes whatever has queued meanwhile in
// one system call.
const writeThroughIdle = 200 * time.Millisecond

// maxWriteThrough is the largest batch of framed bytes a fast path writes;
// larger ones are queued as usual.
const maxWriteThrough = 32 << 10

var writeBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// rawWriter makes non-blocking raw writes on a connection's socket. It
// exists when such a write of WebSocket frames is correct: plain TCP or
// Unix sockets. Its callback is made once, so a write allocates nothing
// (a closure passed to RawConn.Control escapes: one allocation per write,
// the largest allocation site of a CDC drain's profile, BENCHMARKS.md).
// Its callers hold the connection's write claim (conn.writing), so one
// write at a time uses b and n.
type rawWriter struct {
	rc syscall.RawConn
	fn func(fd uintptr)
	b  []byte // what the current write writes
	n  int    // what it wrote
}

// newRawWriter returns nc's rawWriter, nil when nc does not qualify.
func newRawWriter(nc net.Conn) *rawWriter {
	var sc syscall.Conn
	switch x := nc.(type) {
	case *net.TCPConn:
		sc = x
	case *net.UnixConn:
		sc = x
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &rawWriter{rc: rc}
	w.fn = w.write
	return w
}

// try makes one non-blocking write of b and returns how many bytes the
// socket took (0 on EAGAIN or any error: the writer then meets the error
// itself). It never waits for the socket to become writable.
//
// It uses RawConn.Control, not RawConn.Write: Write refuses to run once a
// write deadline the writer set has passed, and the claim (conn.writing)
// already makes this the socket's only writer. The socket is non-blocking
// (the runtime's poller owns it), so the system call returns at once; it
// is therefore made raw (RawSyscall), without the scheduler's system-call
// bookkeeping, which also wakes the runtime's monitor thread when the
// process was idle (see cdc.rawReadConn for the measurement).
func (w *rawWriter) try(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	w.b, w.n = b, 0
	err := w.rc.Control(w.fn)
	n := w.n
	w.b = nil
	if err != nil {
		return 0
	}
	return n
}

func (w *rawWriter) write(fd uintptr) {
	for {
		m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.b[0])), uintptr(len(w.b)))
		if e == syscall.EINTR {
			continue
		}
		if e == 0 && m > 0 {
			w.n = int(m)
		}
		return
	}
}

// writeThroughLocked tries the fast path for frames (n bytes of payload)
// at now. It is called with c.mu held and the bounds checked. When the fast path
// applies it writes (or hands to the writer) every frame, releases c.mu
// and reports true; otherwise it reports false with c.mu still held, and
// the caller queues the frames.
func (c *conn) writeThroughLocked(frames [][]byte, n int, now time.Time) bool {
	if c.raw == nil || c.writing || len(c.queue) > 0 || c.rest != nil || c.readerDone ||
		n+10*len(frames) > maxWriteThrough || now.Sub(c.lastWrite) < c.wtIdle {
		return false
	}
	c.lastWrite = now
	c.writing = true
	c.mu.Unlock()

	bp := writeBufPool.Get().(*[]byte)
	buf := (*bp)[:0]
	for _, f := range frames {
		buf = appendFrameHeader(buf, len(f))
		buf = append(buf, f...)
	}
	w := c.raw.try(buf)
	var rest []byte
	restFrame := 0
	if w < len(buf) {
		rest = append([]byte(nil), buf[w:]...)
		restFrame = len(frameRest(buf, w)) // 0 when w is on a frame boundary
	}
	*bp = buf
	writeBufPool.Put(bp)
	c.h.metrics.countOut(frames...)

	c.mu.Lock()
	c.writing = false
	if rest != nil && !c.aborted.Load() {
		c.rest, c.restFrame = rest, restFrame
		c.queued += len(rest)
		if c.since.IsZero() {
			c.since = time.Now()
		}
	} else if rest != nil && restFrame > 0 {
		// Overflowed meanwhile: only the started frame is completed,
		// before the close frame (slowclose.go).
		c.rest, c.restFrame = rest[:restFrame], restFrame
	}
	c.endClaimLocked()
	return true
}

// pingNow writes a ping frame directly when the socket is free: a plain
// socket whose writer is not writing, with nothing queued or half-written
// and the connection not closing. It reports false when it wrote nothing;
// the caller then leaves the ping to the writer.
func (c *conn) pingNow() bool {
	if c.raw == nil {
		return false
	}
	c.mu.Lock()
	if c.writing || len(c.queue) > 0 || c.rest != nil || c.readerDone || c.closing.code != 0 {
		c.mu.Unlock()
		return false
	}
	c.writing = true
	c.mu.Unlock()

	w := c.raw.try(pingFrame)

	c.mu.Lock()
	c.writing = false
	if w > 0 && w < len(pingFrame) {
		// The writer completes the frame before anything else.
		c.rest, c.restFrame = append([]byte(nil), pingFrame[w:]...), len(pingFrame)-w
		c.queued += len(c.rest)
	}
	c.endClaimLocked()
	return w > 0
}

// endClaimLocked ends a write-through's or pingNow's claim on the socket
// (c.writing, already cleared by the caller): it releases c.mu and wakes
// the writer if anything is left for it.
func (c *conn) endClaimLocked() {
	wake := c.rest != nil || len(c.queue) > 0 || c.closing.code != 0 || c.readerDone || c.pingDue.Load()
	c.mu.Unlock()
	if wake {
		c.signal()
	}
}
