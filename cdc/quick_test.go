package cdc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// quickCollector is a QuickSink that records, for each transaction, whether
// Apply ran on the reader's goroutine or on the applier's.
type quickCollector struct {
	collector
	mu     sync.Mutex
	inline []bool
	// gate, when set, holds transactions larger than one change.
	bigGate chan struct{}
}

func (q *quickCollector) QuickApply() {}

func (q *quickCollector) Apply(txn *Txn) error {
	buf := make([]byte, 64<<10)
	stack := buf[:runtime.Stack(buf, false)]
	onApplier := bytes.Contains(stack, []byte("(*Reader).applier"))
	onReader := bytes.Contains(stack, []byte("(*Reader).handOff"))
	if onApplier == onReader {
		return fmt.Errorf("Apply called from neither or both of the applier and handOff:\n%s", stack)
	}
	if q.bigGate != nil && len(txn.Changes) > 1 {
		<-q.bigGate
	}
	q.mu.Lock()
	q.inline = append(q.inline, onReader)
	q.mu.Unlock()
	return q.collector.Apply(txn)
}

func (q *quickCollector) inlined() []bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]bool(nil), q.inline...)
}

// TestQuickSinkInline: a QuickSink takes small transactions on the
// reader's goroutine when nothing is queued, large ones from the applier,
// and small ones that follow a large one still being applied wait behind it
// (the applier's queue): commit order holds throughout, and the confirmed
// position follows what the sink took.
func TestQuickSinkInline(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY)`)
	sink := &quickCollector{bigGate: make(chan struct{})}
	r := startReader(t, testConfig(url, "t"), sink)
	// The session start goes through the applier: let it be taken first.
	eventually(t, 30*time.Second, "the applier idle", func() bool { return r.pending.Load() == 0 })

	for i := 1; i <= 5; i++ {
		execSQL(t, url, fmt.Sprintf(`INSERT INTO t VALUES (%d)`, i))
	}
	eventually(t, 30*time.Second, "five small transactions", func() bool { return len(sink.snapshot()) == 5 })
	for i, in := range sink.inlined() {
		if !in {
			t.Errorf("transaction %d: applied by the applier, want on the reader's goroutine (nothing was queued)", i+1)
		}
	}
	// A transaction of more than maxQuickChanges goes to the applier; it
	// stalls there, so the next small ones queue behind it.
	execSQL(t, url, fmt.Sprintf(`INSERT INTO t SELECT g FROM generate_series(100, %d) g`, 100+maxQuickChanges))
	eventually(t, 30*time.Second, "the large transaction with the applier", func() bool { return r.pending.Load() == 1 })
	for i := 6; i <= 8; i++ {
		execSQL(t, url, fmt.Sprintf(`INSERT INTO t VALUES (%d)`, i))
	}
	eventually(t, 30*time.Second, "the small ones queued behind it", func() bool { return r.pending.Load() >= 2 })
	if got := len(sink.snapshot()); got != 5 {
		t.Fatalf("%d transactions taken while the large one stalls, want 5: a small one passed it", got)
	}
	close(sink.bigGate)
	eventually(t, 30*time.Second, "all nine transactions", func() bool { return len(sink.snapshot()) == 9 })
	// The sink records a transaction just before the applier counts it
	// taken: wait for the count too.
	eventually(t, 30*time.Second, "the applier idle again", func() bool { return r.pending.Load() == 0 })
	execSQL(t, url, `INSERT INTO t VALUES (9)`)
	eventually(t, 30*time.Second, "the tenth", func() bool { return len(sink.snapshot()) == 10 })

	var got []string
	for _, txn := range sink.snapshot() {
		got = append(got, string(txn.Changes[0].New[0].Value))
	}
	want := []string{"1", "2", "3", "4", "5", "100", "6", "7", "8", "9"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("first row of each transaction: got %v, want %v (commit order)", got, want)
	}
	in := sink.inlined()
	if in[5] {
		t.Errorf("the %d-change transaction was applied on the reader's goroutine, want the applier", maxQuickChanges+1)
	}
	if !in[9] {
		t.Errorf("the last transaction, with the applier idle again, was applied by the applier, want on the reader's goroutine")
	}
	last := sink.snapshot()[9].EndLSN
	eventually(t, 30*time.Second, "confirmed up to the last transaction", func() bool {
		return r.TakenLSN() == last && r.ConfirmedLSN() >= last
	})
}

// TestRawReadConn: the replication socket's raw reads return data, EOF at
// the peer's close, and a timeout error at a read deadline, as net.Conn's
// own reads do.
func TestRawReadConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	nc, err := rawDial(nil)(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, ok := nc.(*rawReadConn); !ok {
		t.Fatalf("rawDial returned %T, want *rawReadConn", nc)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}

	// A read waits in the poller until data comes.
	go func() {
		time.Sleep(50 * time.Millisecond)
		peer.Write([]byte("hello"))
	}()
	buf := make([]byte, 16)
	n, err := nc.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read: %q, %v; want \"hello\"", buf[:n], err)
	}

	// A deadline ends a waiting read with a timeout.
	nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = nc.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v, want a timeout (os.ErrDeadlineExceeded)", err)
	}
	nc.SetReadDeadline(time.Time{})

	// Writes go through as they are; the peer's close is io.EOF.
	if _, err := nc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	peer.Read(buf)
	big := bytes.Repeat([]byte("x"), 1<<20)
	go func() {
		peer.Write(big)
		peer.Close()
	}()
	all, err := io.ReadAll(nc)
	if err != nil || len(all) != len(big) {
		t.Fatalf("ReadAll: %d bytes, %v; want %d bytes and EOF", len(all), err, len(big))
	}
	if n, err := nc.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after EOF: %d, %v; want 0, io.EOF", n, err)
	}

	// A closed connection's read fails rather than hanging.
	nc.Close()
	if _, err := nc.Read(buf); err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read of a closed connection: %v, want net.ErrClosed", err)
	}
}
