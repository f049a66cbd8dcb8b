package wsapi

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The floor benchmarks measure what the issue-15 scenarios cannot avoid on
// this machine: a program that makes only their system calls, with the
// clients' sockets in another process (as snorky-bench's clients are), so
// that the receivers sleep between frames as real ones do. Each reports the
// CPU of the whole benchmark process (RUSAGE_SELF: the system calls, the
// loopback's receive path that runs in the sender's context, the runtime's
// poller, scheduler and collector) per unit of the scenario's target:
//
//	go test -run x -bench Floor -benchtime 1x ./wsapi
//
// Compare with the server's figures in BENCHMARKS.md ("Cheap deliveries").
// The peer process is this test binary again (TestFloorPeer).

const (
	floorPeerEnv  = "SNORKY_FLOOR_PEER"  // address to dial
	floorConnsEnv = "SNORKY_FLOOR_CONNS" // connections to open
	floorModeEnv  = "SNORKY_FLOOR_MODE"  // read, pong or feed
	floorFrame    = 150                  // bytes of a delivered frame, as in the server's benchmarks
	floorFeedMsg  = 200                  // bytes of a replication message (feed mode)
)

// TestFloorPeer is the peer process of the floor benchmarks, not a test:
// it skips unless started by one. Mode read: every connection reads and
// discards. Mode pong: every connection answers each 2-byte ping frame with
// a masked 6-byte pong, as a browser does. Mode feed: the first connection
// writes a floorFeedMsg-byte message every millisecond (a WAL sender at
// 1,000 transactions/s); the others read and discard.
func TestFloorPeer(t *testing.T) {
	addr := os.Getenv(floorPeerEnv)
	if addr == "" {
		t.Skip("the floor benchmarks' peer process; started by BenchmarkFloor*")
	}
	n, err := strconv.Atoi(os.Getenv(floorConnsEnv))
	if err != nil {
		t.Fatal(err)
	}
	mode := os.Getenv(floorModeEnv)
	d := net.Dialer{}
	for i := range n {
		// Spread the connections over source addresses: one address has
		// about 28,000 ephemeral ports.
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i/5000))}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		switch {
		case mode == "pong":
			go pongLoop(c)
		case mode == "feed" && i == 0:
			go feedLoop(c)
		default:
			go io.Copy(io.Discard, c)
		}
	}
	// Live until the benchmark closes the pipe on stdin.
	io.Copy(io.Discard, os.Stdin)
}

func pongLoop(c net.Conn) {
	pong := []byte{0x8A, 0x80, 1, 2, 3, 4} // final pong, masked, no payload
	buf := make([]byte, 512)
	pending := 0
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		pending += n
		for ; pending >= len(pingFrame); pending -= len(pingFrame) {
			if _, err := c.Write(pong); err != nil {
				return
			}
		}
	}
}

func feedLoop(c net.Conn) {
	msg := make([]byte, floorFeedMsg)
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for range t.C {
		if _, err := c.Write(msg); err != nil {
			return
		}
	}
}

// floorPeer starts the peer process with n connections in mode and returns
// this process's ends of them, in the order the peer dialled them (it
// dials one at a time, so the first is the feed connection in mode feed).
func floorPeer(b *testing.B, n int, mode string) []*net.TCPConn {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloorPeer$")
	cmd.Env = append(os.Environ(), floorPeerEnv+"="+ln.Addr().String(), floorConnsEnv+"="+strconv.Itoa(n), floorModeEnv+"="+mode)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	conns := make([]*net.TCPConn, 0, n)
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		stdin.Close()
		cmd.Wait()
	})
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Minute))
	for len(conns) < n {
		c, err := ln.Accept()
		if err != nil {
			b.Fatalf("accepting connection %d of %d from the peer: %v (open-file limit?)", len(conns)+1, n, err)
		}
		conns = append(conns, c.(*net.TCPConn))
	}
	return conns
}

func rawConns(b *testing.B, conns []*net.TCPConn) []*rawWriter {
	raws := make([]*rawWriter, len(conns))
	for i, c := range conns {
		if raws[i] = newRawWriter(c); raws[i] == nil {
			b.Fatal("no raw writer for a TCP connection")
		}
	}
	return raws
}

// processCPU is the CPU time of this process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return tvDur(ru.Utime) + tvDur(ru.Stime)
}

// floorWrite writes frame to rc with the server's raw write and fails the
// benchmark if the socket does not take it whole (the peer reads
// everything, so it always should).
func floorWrite(b *testing.B, w *rawWriter, frame []byte) {
	if n := w.try(frame); n != len(frame) {
		b.Fatalf("the socket took %d of %d bytes", n, len(frame))
	}
}

// BenchmarkFloorBurst is PubSub at 15 publishes/s to 1,000 subscribers
// with nothing to batch: each message is one write to each subscriber's
// socket, bursts 1/15 s apart. Target: 5 µs of server CPU per delivery.
func BenchmarkFloorBurst(b *testing.B) {
	const subs, rate, rounds = 1000, 15, 150 // 10 s
	raws := rawConns(b, floorPeer(b, subs, "read"))
	frame := make([]byte, floorFrame)
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	b.ResetTimer()
	for range b.N {
		cpu0 := processCPU(b)
		for range rounds {
			<-tick.C
			for _, rc := range raws {
				floorWrite(b, rc, frame)
			}
		}
		b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/1e3/(subs*rounds), "cpu-µs/delivery")
	}
}

// BenchmarkFloorSpread is DataSync with a simple dealer over 10,000
// subscriptions: every delivery is one write to a different socket, in
// batches of 100 (one publishDeltas call), as fast as they go. Target: 6 µs
// of server CPU per delivery.
func BenchmarkFloorSpread(b *testing.B) {
	const subs, writes = 10000, 400_000
	raws := rawConns(b, floorPeer(b, subs, "read"))
	frame := make([]byte, floorFrame)
	b.ResetTimer()
	for range b.N {
		cpu0 := processCPU(b)
		for i := range writes {
			floorWrite(b, raws[(i*7919)%subs], frame) // 7919 is prime: every socket, spread
		}
		b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/1e3/writes, "cpu-µs/delivery")
	}
}

// BenchmarkFloorPingPong is 19,000 idle connections: a ping written to each
// at once, each pong read by the connection's own reader goroutine (a
// 512-byte read, then a read that finds nothing and parks in the poller, as
// gorilla's reader does). Target: 0.01 cores with a ping every 25 s, that is
// 13.2 µs per ping and pong.
func BenchmarkFloorPingPong(b *testing.B) {
	const conns, rounds = 19000, 10
	cs := floorPeer(b, conns, "pong")
	raws := rawConns(b, cs)
	var pongs atomic.Int64
	for _, c := range cs {
		go func() { // ends when the connection is closed
			r := bufio.NewReaderSize(c, 512)
			for {
				if _, err := r.Discard(6); err != nil {
					return
				}
				pongs.Add(1)
			}
		}()
	}
	b.ResetTimer()
	for range b.N {
		cpu0 := processCPU(b)
		for r := range rounds {
			for _, rc := range raws {
				floorWrite(b, rc, pingFrame)
			}
			want := int64(conns * (r + 1))
			deadline := time.Now().Add(time.Minute)
			for pongs.Load() < want {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d pongs after a minute", pongs.Load(), want)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		pairs := float64(conns * rounds)
		perPair := float64((processCPU(b) - cpu0).Nanoseconds()) / 1e3 / pairs
		b.ReportMetric(perPair, "cpu-µs/ping+pong")
		b.ReportMetric(perPair*conns/25/1e6, "cores@19000/25s")
	}
}

// BenchmarkFloorRelay is CDC at 1,000 single-row transactions a second to
// 1,000 subscriptions: each message read from one socket (the WAL sender's)
// is written to one of 1,000 others, the process idle in between. Target:
// 25 µs of server CPU per transaction.
func BenchmarkFloorRelay(b *testing.B) {
	const subs, msgs = 1000, 10_000 // 10 s
	cs := floorPeer(b, subs+1, "feed")
	feed, raws := cs[0], rawConns(b, cs[1:])
	frame := make([]byte, floorFrame)
	r := bufio.NewReaderSize(feed, 8<<10)
	b.ResetTimer()
	for range b.N {
		cpu0 := processCPU(b)
		for i := range msgs {
			if _, err := r.Discard(floorFeedMsg); err != nil {
				b.Fatal(err)
			}
			floorWrite(b, raws[i%subs], frame)
		}
		b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/1e3/msgs, "cpu-µs/transaction")
	}
}
