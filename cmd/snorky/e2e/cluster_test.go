package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"github.com/snorkyhq/snorky/cmd/snorky/natslocal"
)

// clusterDetail is /readyz's detail.cluster of a node.
type clusterDetail struct {
	Node      string `json:"node"`
	Role      string `json:"role"`
	NATS      string `json:"nats"`
	StreamLag uint64 `json:"stream_lag"`
}

func (p *proc) clusterDetail() clusterDetail {
	_, body := p.readyz()
	var v struct {
		Detail struct {
			Cluster clusterDetail `json:"cluster"`
		} `json:"detail"`
	}
	_ = json.Unmarshal([]byte(body), &v)
	return v.Detail.Cluster
}

// startNATS starts n embedded NATS servers with JetStream, stopped at the
// end of the test.
func startNATS(t *testing.T, n int) *natslocal.Cluster {
	t.Helper()
	nc, err := natslocal.Start(t.TempDir(), n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Shutdown)
	return nc
}

// startNodes starts n snorky nodes of one cluster on database url, and
// waits until each is ready (it has caught up with the stream) and one of
// them owns the slot.
func startNodes(t *testing.T, n int, url, natsURL string, replicas int, body string) []*proc {
	t.Helper()
	slot := randomName("e2e_cluster_")
	name := randomName("c")
	nodes := make([]*proc, n)
	for i := range nodes {
		nodes[i] = startServer(t, serverConfig{DatabaseURL: url, Slot: slot, Migrate: true, Body: fmt.Sprintf(`cluster:
  name: %s
  nats: {url: %q}
  stream: {replicas: %d}
datasync: {position_interval: 200ms, resume_wait: 20s}
%s`, name, natsURL, replicas, body)})
	}
	for _, p := range nodes {
		p.waitReady(90 * time.Second)
	}
	waitFor(t, 60*time.Second, "a node owning the slot", func() bool { return owner(nodes) >= 0 })
	return nodes
}

// owner is the index of the running node that owns the slot, or -1.
func owner(nodes []*proc) int {
	for i, p := range nodes {
		if !p.exited() && p.clusterDetail().Role == "owner" {
			return i
		}
	}
	return -1
}

const burstModels = `models:
  Row: {table: burst}
dealers:
  AllRows: {model: Row, kind: broadcast}
`

// writeBurst commits txns transactions of rowsPerTxn rows to table burst,
// pausing pause after each; it returns a channel that gets the outcome.
func writeBurst(t *testing.T, url string, txns, rowsPerTxn int, pause time.Duration, written *atomic.Int64) <-chan error {
	db := dbConnect(t, url)
	done := make(chan error, 1)
	go func() {
		ctx := context.Background()
		for tx := range txns {
			if _, err := db.Exec(ctx, `INSERT INTO burst SELECT g, $1 FROM generate_series($2::int, $3::int) g`,
				tx, tx*rowsPerTxn, tx*rowsPerTxn+rowsPerTxn-1); err != nil {
				done <- fmt.Errorf("transaction %d: %w", tx, err)
				return
			}
			written.Add(int64(rowsPerTxn))
			time.Sleep(pause)
		}
		done <- nil
	}()
	return done
}

// TestClusterOwnerKilledMidBurst is issue 13's failover test: a 3-server
// JetStream cluster (the stream with 3 replicas), 3 snorky nodes with
// resumable subscribers on each (their tokens authorised on another node),
// a 10,000-row burst (100 transactions of 100 rows), and SIGKILL of the
// node that owns the slot in its middle. Without client-side
// deduplication, every subscriber of a surviving node gets every delta
// exactly once, in order, transactions whole; a standby takes the slot
// over; the killed node's subscribers resume on the other nodes with
// nothing lost and nothing twice.
func TestClusterOwnerKilledMidBurst(t *testing.T) {
	const (
		txns       = 100
		rowsPerTxn = 100
		rows       = txns * rowsPerTxn
		perNode    = 2
	)
	nats := startNATS(t, 3)
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE burst (seq int PRIMARY KEY, tx int NOT NULL)`)
	nodes := startNodes(t, 3, url, nats.URLs(), 3, burstModels)
	own := owner(nodes)
	t.Logf("node %d (%s) owns the slot", own, nodes[own].clusterDetail().Node)

	items := []map[string]any{item("AllRows", nil)}
	type sub struct {
		node int
		c    *wsClient
		res  resumable
		// before is the connection to the killed node, for a moved one.
		before []delta
	}
	var subs []*sub
	for i, p := range nodes {
		for range perNode {
			// Authorised on the next node: acquire works on any node.
			tok := nodes[(i+1)%len(nodes)].mustAuthorize(items, "")
			c := p.dial()
			subs = append(subs, &sub{node: i, c: c, res: c.acquireResumable(tok)})
		}
	}
	epoch := subs[0].res.Epoch
	for _, s := range subs {
		if s.res.Epoch != epoch {
			t.Fatalf("epochs differ between nodes: %s and %s", epoch, s.res.Epoch)
		}
	}

	var written atomic.Int64
	writerDone := writeBurst(t, url, txns, rowsPerTxn, 15*time.Millisecond, &written)
	var watch *wsClient
	for _, s := range subs {
		if s.node != own {
			watch = s.c
			break
		}
	}
	waitFor(t, 60*time.Second, "a third of the burst at a subscriber of a surviving node", func() bool { return watch.count() >= rows/3 })
	nodes[own].kill()
	killedAt := time.Now()
	writtenAtKill := written.Load()

	// A standby takes the slot over: PostgreSQL ends the killed node's
	// session, which releases its advisory lock.
	var takeover time.Duration
	waitFor(t, 60*time.Second, "a surviving node owning the slot", func() bool {
		if owner(nodes) >= 0 {
			takeover = time.Since(killedAt)
			return true
		}
		return false
	})
	if takeover > 25*time.Second {
		t.Errorf("the standby took the slot over %v after the kill, want within 25 s", takeover)
	}

	// The killed node's subscribers resume on the other nodes.
	moved := 0
	for _, s := range subs {
		if s.node != own {
			continue
		}
		<-s.c.done
		from := s.c.lastOffset(s.res)
		to := (own + 1 + moved) % len(nodes)
		if to == own {
			to = (to + 1) % len(nodes)
		}
		moved++
		c := nodes[to].dial()
		r, errText := c.resume(s.res, from)
		if errText != "" {
			t.Fatalf("resume on node %d from %s: %s", to, from, errText)
		}
		if r.Epoch != epoch {
			t.Fatalf("epoch changed across the failover: %s → %s", epoch, r.Epoch)
		}
		s.before, s.c, s.node = s.c.received(), c, to
	}
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	for i, s := range subs {
		waitFor(t, 90*time.Second, fmt.Sprintf("subscriber %d to receive the whole burst", i), func() bool { return len(s.before)+s.c.count() >= rows })
	}
	time.Sleep(300 * time.Millisecond) // anything extra would show now
	for i, s := range subs {
		ds := append(s.before, s.c.received()...)
		checkOffsets(t, fmt.Sprintf("subscriber %d", i), ds)
		if len(ds) != rows {
			t.Errorf("subscriber %d: %d deltas, want %d", i, len(ds), rows)
		}
		burstTxns(t, fmt.Sprintf("subscriber %d", i), ds, rowsPerTxn, false)
	}
	figure(t, "cluster failover: owner killed after %d of %d rows; standby owned the slot %v after the kill; %d subscribers (%d resumed on another node) got %d deltas each, 0 lost, 0 duplicated",
		writtenAtKill, rows, takeover.Round(time.Millisecond), len(subs), moved, rows)
}

// TestClusterNATSServerKilled kills one NATS server of three in the middle
// of a stream (the stream has 3 replicas): the nodes' connections move to
// the others and every subscriber still gets every delta once, in order.
func TestClusterNATSServerKilled(t *testing.T) {
	const (
		txns       = 60
		rowsPerTxn = 50
		rows       = txns * rowsPerTxn
	)
	nats := startNATS(t, 3)
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE burst (seq int PRIMARY KEY, tx int NOT NULL)`)
	nodes := startNodes(t, 2, url, nats.URLs(), 3, burstModels)
	items := []map[string]any{item("AllRows", nil)}
	var clients []*wsClient
	for i, p := range nodes {
		for range 2 {
			c := p.dial()
			c.acquire(nodes[1-i].mustAuthorize(items, ""))
			clients = append(clients, c)
		}
	}
	var written atomic.Int64
	writerDone := writeBurst(t, url, txns, rowsPerTxn, 25*time.Millisecond, &written)
	waitFor(t, 60*time.Second, "a third of the stream", func() bool { return clients[0].count() >= rows/3 })
	nats.Kill(0)
	killedAt, killTime := written.Load(), time.Now()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		waitFor(t, 90*time.Second, fmt.Sprintf("client %d to receive the whole stream", i), func() bool { return c.count() >= rows })
	}
	caughtUp := time.Since(killTime)
	time.Sleep(300 * time.Millisecond)
	for i, c := range clients {
		ds := c.received()
		if len(ds) != rows {
			t.Errorf("client %d: %d deltas, want %d", i, len(ds), rows)
		}
		burstTxns(t, fmt.Sprintf("client %d", i), ds, rowsPerTxn, false)
	}
	figure(t, "cluster: NATS server 1 of 3 killed after %d of %d rows; %d subscribers on 2 nodes got every delta once, in order, the last %v after the kill", killedAt, rows, len(clients), caughtUp.Round(time.Millisecond))
}

// TestClusterTokensAndTakeover: a token acquired on node A cannot be
// acquired again on node B; a resume on node B takes the subscription over
// from node A, whose connection then gets nothing more of it.
func TestClusterTokensAndTakeover(t *testing.T) {
	nats := startNATS(t, 1)
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE burst (seq int PRIMARY KEY, tx int NOT NULL)`)
	nodes := startNodes(t, 2, url, nats.URLs(), 1, burstModels)
	a, b := nodes[0], nodes[1]
	tok := a.mustAuthorize([]map[string]any{item("AllRows", nil)}, "")
	ca := a.dial()
	res := ca.acquireResumable(tok)
	cb := b.dial()
	if r := cb.call("datasync", "acquireSubscription", map[string]any{"token": tok}); r.Type != "error" || r.Message != "Subscription already acquired" {
		t.Fatalf("second acquire of one token on another node: got %s %q, want error \"Subscription already acquired\"", r.Type, r.Message)
	}
	if r := ca.call("datasync", "acquireSubscription", map[string]any{"token": tok}); r.Type != "error" {
		t.Fatalf("second acquire of one token on the same node: got %s, want an error", r.Type)
	}

	ctx := context.Background()
	mustExec(t, db, `INSERT INTO burst VALUES (0, 0)`)
	ca.waitDeltas(1, 30*time.Second)
	// The client moves to node B while its connection to A stays open
	// (as a half-dead connection would).
	cb2 := b.dial()
	if _, errText := cb2.resume(res, ca.lastOffset(res)); errText != "" {
		t.Fatalf("resume on node B: %s", errText)
	}
	if _, err := db.Exec(ctx, `INSERT INTO burst VALUES (1, 0)`); err != nil {
		t.Fatal(err)
	}
	got := cb2.waitDeltas(1, 30*time.Second)
	if num(got[0].Data, "seq") != 1 {
		t.Fatalf("after the takeover node B delivered seq %v, want 1", got[0].Data["seq"])
	}
	// Node A let go: a later row reaches B only.
	mustExec(t, db, `INSERT INTO burst VALUES (2, 0)`)
	cb2.waitDeltas(2, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := ca.count(); n != 1 {
		t.Errorf("node A's connection got %d deltas, want only the 1 before the takeover", n)
	}
	if n := cb2.count(); n != 2 {
		t.Errorf("node B's connection got %d deltas, want 2", n)
	}
}

// TestClusterWithoutDatabase: two nodes without a database share
// publishDeltas batches through the stream: a batch published on either
// node reaches subscribers on both, once, in one order, with the same
// offsets; a subscriber resumes on the other node.
func TestClusterWithoutDatabase(t *testing.T) {
	nats := startNATS(t, 1)
	name := randomName("c")
	var nodes []*proc
	for range 2 {
		path, front, back := writeConfig(t, serverConfig{})
		yaml := fmt.Sprintf(`frontend: {listen: %q, path: /ws}
backend: {listen: %q, path: /backend, api_key: %q}
tokens: {secret: %q}
limits: {commands_per_second: 0}
datasync: {position_interval: 200ms}
cluster: {name: %s, nats: {url: %q}}
models:
  Note: {}
dealers:
  AllNotes: {model: Note, kind: broadcast}
`, front, back, apiKey, tokenSecret, name, nats.URLs())
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, startProc(t, path, front, back))
	}
	for _, p := range nodes {
		p.waitReady(60 * time.Second)
	}
	items := []map[string]any{item("AllNotes", nil)}
	var clients []*wsClient
	var res []resumable
	for i, p := range nodes {
		c := p.dial()
		res = append(res, c.acquireResumable(nodes[1-i].mustAuthorize(items, "")))
		clients = append(clients, c)
	}
	if res[0].Epoch != res[1].Epoch {
		t.Fatalf("the nodes' epochs differ: %s and %s", res[0].Epoch, res[1].Epoch)
	}
	publish := func(p *proc, id int) {
		t.Helper()
		if _, rpcErr, err := p.backend("datasync_backend", "publishDeltas", map[string]any{"deltas": []any{
			map[string]any{"type": "insert", "model": "Note", "data": map[string]any{"id": id}},
		}}); err != nil || rpcErr != "" {
			t.Fatalf("publishDeltas on a node: %v %s", err, rpcErr)
		}
	}
	for i := range 20 {
		publish(nodes[i%2], i)
	}
	for _, c := range clients {
		c.waitDeltas(20, 30*time.Second)
	}
	a, b := clients[0].received(), clients[1].received()
	for i := range a {
		if a[i].Offset != b[i].Offset || num(a[i].Data, "id") != num(b[i].Data, "id") {
			t.Fatalf("delta %d differs between the nodes: %s %v and %s %v", i, a[i].Offset, a[i].Data, b[i].Offset, b[i].Data)
		}
	}
	checkOffsets(t, "node 0's client", a)
	// Client 0 moves to node 1 and resumes from its last offset.
	from := clients[0].lastOffset(res[0])
	c := nodes[1].dial()
	if _, errText := c.resume(res[0], from); errText != "" {
		t.Fatalf("resume on the other node: %s", errText)
	}
	publish(nodes[0], 20)
	got := c.waitDeltas(1, 30*time.Second)
	if num(got[0].Data, "id") != 20 {
		t.Fatalf("after the resume: got %v, want note 20", got[0].Data)
	}
}
