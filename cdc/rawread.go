package cdc

import (
	"context"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawReadConn is the replication connection's socket, read with raw
// read(2) calls on the runtime's non-blocking descriptor.
//
// Why: at low rates the server is idle between transactions, and a Go
// process whose every processor is idle wakes its monitor thread (sysmon)
// on the next system call made through syscall.Syscall, which then polls
// every 20 µs for a while. Measured with perf at 1,000 single-row
// transactions a second, that monitor took about a quarter of the server's
// CPU (BENCHMARKS.md, issue 15). A read of a non-blocking socket returns at
// once, so it needs none of the scheduler's system-call bookkeeping; the
// runtime's poller still does the waiting (RawConn.Read), deadlines
// included.
type rawReadConn struct {
	net.Conn
	rc syscall.RawConn
}

func (c *rawReadConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait in the poller, then call again
			}
			n, errno = int(r), e
			return true
		}
	})
	switch {
	case err != nil: // a deadline, or the socket closed
		return 0, err
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// rawDial wraps dial so that the sockets it opens are read by
// rawReadConn. A connection without a descriptor (none of the standard
// dialers' kind) is returned as it is.
func rawDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		sc, ok := nc.(syscall.Conn)
		if !ok {
			return nc, nil
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return nc, nil
		}
		return &rawReadConn{Conn: nc, rc: rc}, nil
	}
}
