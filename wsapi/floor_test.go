package wsapi

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkWriteFloor measures what one delivery cannot avoid on this
// machine: one write(2) of a small WebSocket frame to a loopback TCP socket
// whose reader is another goroutine. The writing goroutine is locked to its
// thread, and the thread's CPU time (RUSAGE_THREAD: the system call, the
// loopback's receive path that runs in the sender's context, and waking the
// reader) is reported per write as thread-µs/write. Run it beside the
// server figures in BENCHMARKS.md ("Cheap deliveries"):
//
//	go test -run x -bench WriteFloor -benchtime 20000x ./wsapi
//
// 10,000 sockets need 20,000 descriptors in this process and are skipped
// where the open-file limit is lower.
func BenchmarkWriteFloor(b *testing.B) {
	for _, conns := range []int{1, 1000, 10000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			writeFloor(b, conns, 150)
		})
	}
}

// rusageThread is RUSAGE_THREAD (Linux), which package syscall does not
// name.
const rusageThread = 1

func writeFloor(b *testing.B, n, size int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	writers := make([]*net.TCPConn, 0, n)
	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	var readers []net.Conn
	defer func() {
		for _, c := range writers {
			c.Close()
		}
		for _, c := range readers {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Skipf("dial %d: %v (open-file limit?)", len(writers), err)
		}
		r := <-accepted
		readers = append(readers, r)
		go io.Copy(io.Discard, r)
		writers = append(writers, c.(*net.TCPConn))
	}
	frame := make([]byte, size) // the readers discard it: content is irrelevant
	raws := make([]syscall.RawConn, n)
	for i, c := range writers {
		if raws[i], err = c.SyscallConn(); err != nil {
			b.Fatal(err)
		}
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var before, after syscall.Rusage
	b.ResetTimer()
	if err := syscall.Getrusage(rusageThread, &before); err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		var werr error
		if err := raws[i%n].Write(func(fd uintptr) bool {
			_, werr = syscall.Write(int(fd), frame)
			return werr != syscall.EAGAIN
		}); err != nil {
			b.Fatal(err)
		}
		if werr != nil {
			b.Fatal(werr)
		}
	}
	if err := syscall.Getrusage(rusageThread, &after); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	cpu := tvDur(after.Utime) - tvDur(before.Utime) + tvDur(after.Stime) - tvDur(before.Stime)
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "thread-µs/write")
}

func tvDur(tv syscall.Timeval) time.Duration {
	return time.Duration(tv.Sec)*time.Second + time.Duration(tv.Usec)*time.Microsecond
}
