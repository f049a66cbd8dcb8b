package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal"
)

// cdcConfig is the cdc scenario: N subscriptions of a simple dealer keyed
// on items.key, fed by the server's PostgreSQL reader while writers commit
// rows. Each row's key is its sequence number modulo N, so every row
// reaches exactly one subscription and deliveries count decoded-and-routed
// row changes.
type cdcConfig struct {
	Subs        int
	Rate        float64 // rows per second; 0 with Saturate
	Saturate    bool
	Duration    time.Duration
	Writers     int // writer connections
	TxRows      int // rows per transaction (0: 1 with --rate, 100 with --saturate)
	Payload     int // bytes of the payload column
	Backlog     int // --saturate: rows of the drain comparison with pg_recvlogical; 0 skips it
	DatabaseURL string
	PGBin       string
	Slot        string
	Publication string
	RefSlot     string
	Drain       time.Duration
	DialConc    int
	PerAddr     int
	Service     string
	BackendSvc  string
	// Nodes above 1 runs a cluster: that many servers joined through a
	// NATS server (a child process), subscriptions spread over them.
	Nodes int
}

func (c *cdcConfig) register(fs *flag.FlagSet) {
	fs.IntVar(&c.Subs, "subs", 1000, "subscriptions of the simple dealer ByKey (keys 0..subs-1), each on its own WebSocket; 0: none, count decoded rows at /metrics (snorky_cdc_changes_total)")
	fs.Float64Var(&c.Rate, "rate", 0, "rows per second, committed by the writers (or --saturate)")
	fs.BoolVar(&c.Saturate, "saturate", false, "commit as fast as PostgreSQL accepts; then time draining a backlog against pg_recvlogical")
	fs.DurationVar(&c.Duration, "duration", 20*time.Second, "how long to write")
	fs.IntVar(&c.Writers, "writers", 4, "writer connections")
	fs.IntVar(&c.TxRows, "tx-rows", 0, "rows per transaction (default 1 with --rate, 100 with --saturate)")
	fs.IntVar(&c.Payload, "payload", 16, "bytes of each row's payload column")
	fs.IntVar(&c.Backlog, "backlog", 300000, "with --saturate: rows written while the server is paused, then drained by the server and by pg_recvlogical (0 skips)")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "use this PostgreSQL (wal_level=logical) instead of a throwaway cluster")
	fs.StringVar(&c.PGBin, "pg-bin", "", "PostgreSQL bin directory (default: newest /usr/lib/postgresql/*/bin)")
	fs.StringVar(&c.Slot, "slot", "snorky_bench", "the server's replication slot")
	fs.StringVar(&c.Publication, "publication", "snorky_bench", "the server's publication (pg_recvlogical uses it too)")
	fs.StringVar(&c.RefSlot, "ref-slot", "bench_ref", "pg_recvlogical's replication slot")
	fs.DurationVar(&c.Drain, "drain", 60*time.Second, "how long to wait for outstanding deliveries (and for each drain)")
	fs.IntVar(&c.DialConc, "dial-concurrency", 64, "concurrent subscription set-ups")
	fs.IntVar(&c.PerAddr, "per-source-addr", 5000, "client connections per loopback source address")
	fs.StringVar(&c.Service, "service", "datasync", "frontend DataSync service name")
	fs.StringVar(&c.BackendSvc, "backend-service", "datasync_backend", "backend DataSync service name")
	fs.IntVar(&c.Nodes, "nodes", 1, "servers in a cluster joined through a NATS server (a child process); subscriptions go round-robin to them, CPU is summed over them and NATS")
}

// Validate checks the scenario's bounds and fills the defaults that depend
// on other flags.
func (c *cdcConfig) Validate() error {
	if c.Nodes == 0 {
		c.Nodes = 1
	}
	if c.TxRows == 0 {
		c.TxRows = 1
		if c.Saturate {
			c.TxRows = 100
		}
	}
	switch {
	case c.Subs < 0 || c.Subs > 19000:
		return fmt.Errorf("--subs: got %d, want 0..19000 (0: no subscriptions, count at /metrics)", c.Subs)
	case c.Saturate == (c.Rate > 0):
		return errors.New("give exactly one of --rate R (R > 0) and --saturate")
	case c.Duration <= 0 || c.Duration > time.Hour:
		return fmt.Errorf("--duration: got %v, want (0, 1h]", c.Duration)
	case c.Writers < 1 || c.Writers > 64:
		return fmt.Errorf("--writers: got %d, want 1..64", c.Writers)
	case c.TxRows < 1 || c.TxRows > 10000:
		return fmt.Errorf("--tx-rows: got %d, want 1..10000", c.TxRows)
	case c.Payload < 0 || c.Payload > 1<<16:
		return fmt.Errorf("--payload: got %d, want 0..65536", c.Payload)
	case c.Backlog < 0:
		return fmt.Errorf("--backlog: got %d, want >= 0", c.Backlog)
	case !sqlName(c.Slot) || !sqlName(c.Publication) || !sqlName(c.RefSlot) || c.Slot == c.RefSlot:
		return errors.New("--slot, --publication and --ref-slot must be distinct lower-case SQL names ([a-z_][a-z0-9_]*)")
	case c.DialConc < 1 || c.PerAddr < 1 || c.Drain <= 0:
		return errors.New("--dial-concurrency, --per-source-addr and --drain must be positive")
	case c.Nodes < 1 || c.Nodes > 8:
		return fmt.Errorf("--nodes: got %d, want 1..8", c.Nodes)
	case c.Nodes > 1 && c.Saturate && c.Backlog > 0:
		return errors.New("--nodes with --saturate: add --backlog 0 (the drain comparison with pg_recvlogical measures one server)")
	}
	return nil
}

// sqlName reports whether s is a plain lower-case identifier (so that it
// needs no quoting in YAML or SQL).
func sqlName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || r >= 'a' && r <= 'z':
		case i > 0 && r >= '0' && r <= '9':
		default:
			return false
		}
	}
	return true
}

// cdcServerConfig is the database, models and dealers section of the
// spawned server for the cdc scenario.
func cdcServerConfig(url string, c cdcConfig) string {
	return fmt.Sprintf(`database:
  url: %q
  slot: %s
  publication: %s
models:
  Item: {table: public.items}
dealers:
  ByKey: {model: Item, kind: simple, key: key}
  All: {model: Item, kind: broadcast}
`, url, c.Slot, c.Publication)
}

const itemsDDL = `CREATE TABLE IF NOT EXISTS items (id bigserial PRIMARY KEY, key int NOT NULL, ts bigint NOT NULL, payload text)`

// cdcDatabase is the PostgreSQL the scenario writes to.
type cdcDatabase struct {
	URL     string
	cluster *pglocal.Server // nil with --database-url
	bin     string          // PostgreSQL bin directory, for pg_recvlogical
	cfg     cdcConfig
	// DropServerSlot: drop the server's slot on Close (the runner spawned
	// the server, so nothing else will consume it).
	DropServerSlot bool
}

// openCDCDatabase starts a throwaway cluster (or uses --database-url),
// creates the items table, and removes slots a previous run left behind.
func openCDCDatabase(ctx context.Context, cfg cdcConfig, logf func(string, ...any)) (*cdcDatabase, error) {
	db := &cdcDatabase{URL: cfg.DatabaseURL, cfg: cfg}
	if cfg.DatabaseURL == "" {
		c, err := startPG(ctx, cfg.PGBin, logf)
		if err != nil {
			return nil, err
		}
		db.cluster, db.URL, db.bin = c, c.URL("postgres"), c.BinDir()
	} else if cfg.Saturate && cfg.Backlog > 0 {
		bin, err := findPGBin(cfg.PGBin)
		if err != nil {
			return nil, err
		}
		db.bin = bin
	}
	ok := false
	defer func() {
		if !ok {
			db.Close(logf)
		}
	}()
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, itemsDDL); err != nil {
		return nil, fmt.Errorf("creating table items: %w", err)
	}
	for _, slot := range []string{cfg.Slot, cfg.RefSlot} {
		if err := dropSlot(ctx, conn, slot); err != nil {
			return nil, err
		}
	}
	ok = true
	return db, nil
}

// findPGBin returns dir (--pg-bin) if it holds postgres, else the
// PostgreSQL binaries pglocal finds; either resolved to the directory the
// postgres binary really is in, where pg_recvlogical is too (a PATH
// directory may hold links to initdb and postgres only).
func findPGBin(dir string) (string, error) {
	if dir == "" {
		var err error
		if dir, err = pglocal.FindBinDir(); err != nil {
			return "", err
		}
	}
	p, err := filepath.EvalSymlinks(filepath.Join(dir, "postgres"))
	if err != nil {
		return "", fmt.Errorf("--pg-bin: %w", err)
	}
	return filepath.Dir(p), nil
}

// startPG starts a throwaway PostgreSQL for the scenario (cdc/pglocal:
// logical decoding, fsync off) with room for a long ingest: a large
// max_wal_size and shared_buffers, and full-page writes on as before.
func startPG(ctx context.Context, binDir string, logf func(string, ...any)) (*pglocal.Server, error) {
	bin, err := findPGBin(binDir)
	if err != nil {
		return nil, err
	}
	pg, err := pglocal.Start(ctx, pglocal.Options{BinDir: bin, Settings: map[string]string{
		"max_wal_size":     "4GB",
		"shared_buffers":   "256MB",
		"full_page_writes": "on",
	}})
	if err != nil {
		return nil, err
	}
	logf("postgres: %s, data %s", pg.URL("postgres"), pg.DataDir())
	return pg, nil
}

// tail returns the last n bytes of b as a string.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// dropSlot drops a replication slot if it exists and nothing uses it.
func dropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	var active bool
	err := conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading slot %s: %w", slot, err)
	}
	if active {
		return fmt.Errorf("replication slot %s is in use; stop its consumer or choose another name", slot)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
		return fmt.Errorf("dropping slot %s: %w", slot, err)
	}
	return nil
}

// Close stops a throwaway cluster; on a given database it drops the slots
// the run created, so that they do not retain WAL.
func (db *cdcDatabase) Close(logf func(string, ...any)) {
	if db.cluster != nil {
		if err := db.cluster.Stop(); err != nil {
			logf("warning: stopping PostgreSQL: %v", err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		logf("warning: connecting to drop the slots: %v", err)
		return
	}
	defer conn.Close(ctx)
	slots := []string{db.cfg.RefSlot}
	if db.DropServerSlot {
		slots = append(slots, db.cfg.Slot)
	}
	for _, s := range slots {
		if err := dropSlot(ctx, conn, s); err != nil {
			logf("warning: %v", err)
		}
	}
}

// cdcResult is the scenario's summary.
type cdcResult struct {
	Scenario     string  `json:"scenario"`
	Mode         string  `json:"mode"`
	Subs         int     `json:"subs"`
	TargetRate   float64 `json:"target_rate,omitempty"`
	DurationS    float64 `json:"duration_s"`
	Writers      int     `json:"writers"`
	TxRows       int     `json:"tx_rows"`
	PayloadBytes int     `json:"payload_bytes"`
	ConnectS     float64 `json:"connect_s"`

	Rows            uint64  `json:"rows_committed"`
	Txns            uint64  `json:"transactions"`
	WriteErrors     uint64  `json:"write_errors"`
	FirstWriteError string  `json:"first_write_error,omitempty"`
	RowsPerSec      float64 `json:"rows_committed_per_s"`

	Received        uint64  `json:"received"`
	Lost            int64   `json:"lost"`
	LossPct         float64 `json:"loss_pct"`
	WindowS         float64 `json:"window_s"`
	DeliveredPerSec float64 `json:"delivered_per_s"`

	// Latency is commit→client: from the writer's clock just before it
	// sends the (autocommit) INSERT to the delta's arrival.
	Latency   latencySummary `json:"latency"`
	WriteCall latencySummary `json:"write_call"`

	ServerCPUS        float64 `json:"server_cpu_s"`
	ServerCores       float64 `json:"server_cores"`
	ServerCPUPerRowUS float64 `json:"server_cpu_us_per_row"`
	ServerRSSEndKiB   int64   `json:"server_rss_end_kib"`
	MetricChanges     float64 `json:"metric_cdc_changes"`      // snorky_cdc_changes_total over the window (-1: absent)
	MetricDeliveries  float64 `json:"metric_deliveries"`       // snorky_datasync_deliveries_total over the window (-1: absent)
	MetricTxns        float64 `json:"metric_cdc_transactions"` // snorky_cdc_transactions_total over the window (-1: absent)
	ClientCPUS        float64 `json:"client_cpu_s"`
	OtherCPUS         float64 `json:"other_cpu_s"`
	HostCPUPct        float64 `json:"host_cpu_pct"`

	// Nodes and NATSCPUS, for a cluster: the server figures above are
	// summed over the nodes and the NATS server, whose own share is here.
	Nodes    int     `json:"nodes,omitempty"`
	NATSCPUS float64 `json:"nats_cpu_s,omitempty"`

	Drain *cdcDrain `json:"drain,omitempty"`

	SubsClosed int            `json:"subs_closed"`
	CloseCodes map[string]int `json:"close_codes,omitempty"`
}

// cdcDrain compares how fast the server and pg_recvlogical consume the same
// backlog: Rows rows committed while the server was paused (SIGSTOP) and
// pg_recvlogical's slot (created just before) had no consumer. Each then
// drains it alone: the server until its subscribers received every row,
// pg_recvlogical until it exits at the end LSN (--endpos).
type cdcDrain struct {
	Rows            int     `json:"rows"`
	WALBytes        int64   `json:"wal_bytes"`
	WriteS          float64 `json:"write_s"`
	WriteRowsPerSec float64 `json:"write_rows_per_s"`

	ServerS           float64 `json:"server_s"`
	ServerDelivered   uint64  `json:"server_delivered"`
	ServerComplete    bool    `json:"server_complete"`
	ServerRowsPerSec  float64 `json:"server_rows_per_s"`
	ServerCores       float64 `json:"server_cores"`
	ServerCPUPerRowUS float64 `json:"server_cpu_us_per_row"`
	MetricChanges     float64 `json:"metric_cdc_changes"`

	RefS          float64 `json:"pg_recvlogical_s"`
	RefComplete   bool    `json:"pg_recvlogical_complete"`
	RefError      string  `json:"pg_recvlogical_error,omitempty"`
	RefRowsPerSec float64 `json:"pg_recvlogical_rows_per_s"`
	RefCPUS       float64 `json:"pg_recvlogical_cpu_s"`

	// Ratio is ServerRowsPerSec / RefRowsPerSec.
	Ratio float64 `json:"ratio"`
}

// cdcWriters commits rows through Writers connections.
type cdcWriters struct {
	conns   []*pgx.Conn
	cfg     cdcConfig
	recv    *deltaReceiver // for the clock
	payload string

	seq      atomic.Int64 // rows handed out
	rows     atomic.Uint64
	txns     atomic.Uint64
	errs     atomic.Uint64
	firstErr atomic.Pointer[string]
	callLat  *histogram
}

func openWriters(ctx context.Context, url string, cfg cdcConfig, recv *deltaReceiver) (*cdcWriters, error) {
	w := &cdcWriters{cfg: cfg, recv: recv, payload: strings.Repeat("x", cfg.Payload), callLat: new(histogram)}
	for range cfg.Writers {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			w.close()
			return nil, fmt.Errorf("writer: connecting: %w", err)
		}
		w.conns = append(w.conns, c)
	}
	return w, nil
}

func (w *cdcWriters) close() {
	for _, c := range w.conns {
		c.Close(context.Background())
	}
}

const (
	insertOne  = `INSERT INTO items (key, ts, payload) VALUES ($1, $2, $3)`
	insertMany = `INSERT INTO items (key, ts, payload) SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[])`
)

// commit writes rows seq0..seq0+n-1 in one autocommit statement (one
// transaction). ts is taken just before the statement is sent, so it
// precedes the COMMIT by the statement's execution time.
func (w *cdcWriters) commit(ctx context.Context, conn *pgx.Conn, seq0 int64, n int, keys []int32, tss []int64, pays []string) error {
	subs := int64(max(w.cfg.Subs, 1))
	start := time.Now()
	var err error
	if n == 1 {
		_, err = conn.Exec(ctx, insertOne, int32(seq0%subs), w.recv.clock(), w.payload)
	} else {
		ts := w.recv.clock()
		for i := range n {
			keys[i], tss[i], pays[i] = int32((seq0+int64(i))%subs), ts, w.payload
		}
		_, err = conn.Exec(ctx, insertMany, keys[:n], tss[:n], pays[:n])
	}
	if err != nil {
		if ctx.Err() == nil && w.errs.Add(1) == 1 {
			msg := err.Error()
			w.firstErr.Store(&msg)
		}
		return err
	}
	w.callLat.Record(time.Since(start))
	w.rows.Add(uint64(n))
	w.txns.Add(1)
	return nil
}

// saturate commits transactions on every connection until end passes or,
// with limit > 0, until limit rows were handed out in this call.
func (w *cdcWriters) saturate(ctx context.Context, end time.Time, limit int64) {
	var wg sync.WaitGroup
	stop := int64(-1)
	if limit > 0 {
		stop = w.seq.Load() + limit
	}
	for _, conn := range w.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := w.cfg.TxRows
			keys, tss, pays := make([]int32, n), make([]int64, n), make([]string, n)
			for ctx.Err() == nil && (limit > 0 || time.Now().Before(end)) {
				seq0 := w.seq.Add(int64(n)) - int64(n)
				k := n
				if stop >= 0 {
					if seq0 >= stop {
						return
					}
					k = int(min(int64(n), stop-seq0))
				}
				if err := w.commit(ctx, conn, seq0, k, keys, tss, pays); err != nil && ctx.Err() == nil {
					time.Sleep(10 * time.Millisecond) // do not spin on a failing database
				}
			}
		}()
	}
	wg.Wait()
}

// atRate commits transactions of TxRows rows at Rate rows per second until
// end, on whichever connection is free.
func (w *cdcWriters) atRate(ctx context.Context, end time.Time) {
	tickets := make(chan int64, len(w.conns))
	var wg sync.WaitGroup
	n := w.cfg.TxRows
	for _, conn := range w.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys, tss, pays := make([]int32, n), make([]int64, n), make([]string, n)
			for seq0 := range tickets {
				_ = w.commit(ctx, conn, seq0, n, keys, tss, pays)
			}
		}()
	}
	interval := time.Duration(float64(time.Second) * float64(n) / w.cfg.Rate)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
loop:
	for i := int64(0); ; i++ {
		next := start.Add(time.Duration(i) * interval)
		if !next.Before(end) {
			break
		}
		timer.Reset(time.Until(next))
		select {
		case <-timer.C:
		case <-ctx.Done():
			break loop
		}
		select {
		case tickets <- w.seq.Add(int64(n)) - int64(n):
		case <-ctx.Done():
			break loop
		}
	}
	close(tickets)
	wg.Wait()
}

var cdcMetricNames = []string{"snorky_cdc_changes_total", "snorky_cdc_transactions_total", "snorky_datasync_deliveries_total"}

// runCDC runs the scenario against srv, whose reader streams from db.
func runCDC(ctx context.Context, cfg cdcConfig, nodes []*server, nats *natsProc, db *cdcDatabase, logf func(string, ...any)) (*cdcResult, error) {
	srv := nodes[0]
	recv := newDeltaReceiver()
	connectStart := time.Now()
	// Subscription i goes to node i mod N (key i).
	var subs []*dsSub
	var err error
	for g, node := range nodes {
		n := cfg.Subs / len(nodes)
		if g < cfg.Subs%len(nodes) {
			n++
		}
		be, closeBE := newBackendClient(node, cfg.DialConc)
		defer closeBE()
		d := &wsDialer{url: node.WSURL, src: newSourceAddrs(g, cfg.PerAddr), readBuf: 4096, writeBuf: 1024, timeout: 10 * time.Second}
		logf("cdc: authorising and acquiring %d subscriptions of ByKey on %s from %v", n, node.WSURL, d.src)
		var part []*dsSub
		part, err = subscribeAll(ctx, node, d, be, cfg.Service, cfg.BackendSvc, n, cfg.DialConc,
			func(i int) (string, any) { return "ByKey", i*len(nodes) + g }, recv, logf)
		subs = append(subs, part...)
		if err != nil {
			break
		}
	}
	var codes map[string]int
	closed := false
	defer func() {
		if !closed {
			recv.closeAll(subs)
		}
	}()
	if err != nil {
		return nil, err
	}
	connectTime := time.Since(connectStart)
	logf("cdc: %d subscriptions acquired in %.1fs", cfg.Subs, connectTime.Seconds())

	w, err := openWriters(ctx, db.URL, cfg, recv)
	if err != nil {
		return nil, err
	}
	defer w.close()

	res := &cdcResult{
		Scenario: "cdc", Mode: "rate", Subs: cfg.Subs, TargetRate: cfg.Rate, DurationS: cfg.Duration.Seconds(),
		Writers: cfg.Writers, TxRows: cfg.TxRows, PayloadBytes: cfg.Payload, ConnectS: connectTime.Seconds(),
	}
	if cfg.Saturate {
		res.Mode = "saturate"
	}
	pids := []int{}
	for _, n := range nodes[1:] {
		pids = append(pids, n.PID)
	}
	if nats != nil {
		pids = append(pids, nats.PID)
	}
	m0 := scrapeNodes(ctx, nodes, cdcMetricNames...)
	u0, err := sampleUsage(srv)
	if err != nil {
		return nil, err
	}
	others0, err := cpuOf(pids)
	if err != nil {
		return nil, err
	}
	var natsCPU0 time.Duration
	if nats != nil {
		natsCPU0, _ = cpuOf([]int{nats.PID})
	}

	var lastRows, lastRecv uint64
	stopProgress := everySecond(ctx, func(i int) {
		rows, r := w.rows.Load(), recv.received.Load()
		logf("cdc: t=%ds committed %d rows/s, delivered %d/s", i, rows-lastRows, r-lastRecv)
		lastRows, lastRecv = rows, r
	})

	t0 := recv.clock()
	end := time.Now().Add(cfg.Duration)
	if cfg.Saturate {
		w.saturate(ctx, end, 0)
	} else {
		w.atRate(ctx, end)
	}
	tWriteEnd := recv.clock()
	rows := w.rows.Load()
	if cfg.Subs == 0 {
		base := m0["snorky_cdc_changes_total"]
		if !waitMetric(ctx, srv.MetricsURL, "snorky_cdc_changes_total", base+float64(rows), cfg.Drain) {
			logf("cdc: the server did not decode %d rows within %v", rows, cfg.Drain)
		}
		recv.last.Store(recv.clock())
	} else if !recv.waitFor(ctx, rows, cfg.Drain) {
		logf("cdc: %d of %d rows delivered after waiting %v", recv.received.Load(), rows, cfg.Drain)
	}
	stopProgress()
	u1, err := sampleUsage(srv)
	if err != nil {
		return nil, fmt.Errorf("sampling the server after the run: %w", err)
	}
	others1, err := cpuOf(pids)
	if err != nil {
		return nil, fmt.Errorf("sampling the other nodes after the run: %w", err)
	}
	spent := u0.until(u1)
	// The other nodes and NATS count as the server.
	spent.Server += others1 - others0
	spent.OtherS = max(0, spent.OtherS-(others1-others0).Seconds())
	if nats != nil {
		natsCPU1, _ := cpuOf([]int{nats.PID})
		res.Nodes, res.NATSCPUS = len(nodes), (natsCPU1 - natsCPU0).Seconds()
	}
	m1 := scrapeNodes(ctx, nodes, cdcMetricNames...)

	received := recv.received.Load()
	if cfg.Subs == 0 {
		// No subscriptions: rows decoded and routed, as the server counts them.
		received = uint64(max(metricDelta(m0, m1, "snorky_cdc_changes_total"), 0))
	}
	res.Rows, res.Txns, res.WriteErrors = rows, w.txns.Load(), w.errs.Load()
	if p := w.firstErr.Load(); p != nil {
		res.FirstWriteError = *p
	}
	res.RowsPerSec = float64(rows) / (float64(tWriteEnd-t0) / 1e9)
	res.Received = received
	res.Lost = int64(rows) - int64(received)
	if rows > 0 {
		res.LossPct = 100 * float64(res.Lost) / float64(rows)
	}
	window := time.Duration(max(recv.last.Load(), tWriteEnd) - t0)
	res.WindowS = window.Seconds()
	if window > 0 {
		res.DeliveredPerSec = float64(received) / window.Seconds()
	}
	res.Latency = recv.lat.Load().Summary()
	res.WriteCall = w.callLat.Summary()
	cpu := spent.Server
	res.ServerCPUS = cpu.Seconds()
	if window > 0 {
		res.ServerCores = cpu.Seconds() / window.Seconds()
	}
	if received > 0 {
		res.ServerCPUPerRowUS = micros(cpu) / float64(received)
	}
	res.ServerRSSEndKiB = u1.server.RSSKiB
	res.MetricChanges = metricDelta(m0, m1, "snorky_cdc_changes_total")
	res.MetricTxns = metricDelta(m0, m1, "snorky_cdc_transactions_total")
	res.MetricDeliveries = metricDelta(m0, m1, "snorky_datasync_deliveries_total")
	res.ClientCPUS, res.HostCPUPct, res.OtherCPUS = spent.ClientS, spent.HostPct, spent.OtherS

	if cfg.Saturate && cfg.Backlog > 0 {
		dr, err := drainComparison(ctx, cfg, srv, db, w, recv, logf)
		if err != nil {
			return nil, fmt.Errorf("drain comparison: %w", err)
		}
		res.Drain = dr
	}

	codes = recv.closeAll(subs)
	closed = true
	for _, n := range codes {
		res.SubsClosed += n
	}
	res.CloseCodes = codes
	return res, nil
}

// scrapeNodes sums the named metrics over the nodes.
func scrapeNodes(ctx context.Context, nodes []*server, names ...string) map[string]float64 {
	sum := map[string]float64{}
	for _, n := range nodes {
		m, _ := scrapeMetrics(ctx, n.MetricsURL, names...)
		for k, v := range m {
			sum[k] += v
		}
	}
	return sum
}

// drainComparison writes cfg.Backlog rows while the server is paused and
// pg_recvlogical's fresh slot has no consumer, then times each draining it
// alone (see cdcDrain).
func drainComparison(ctx context.Context, cfg cdcConfig, srv *server, db *cdcDatabase, w *cdcWriters,
	recv *deltaReceiver, logf func(string, ...any),
) (*cdcDrain, error) {
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	var startLSN string
	if err := conn.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, cfg.RefSlot).Scan(&startLSN); err != nil {
		return nil, fmt.Errorf("creating slot %s: %w", cfg.RefSlot, err)
	}
	defer func() {
		if err := dropSlot(context.Background(), conn, cfg.RefSlot); err != nil {
			logf("warning: %v", err)
		}
	}()
	dr := &cdcDrain{Rows: cfg.Backlog}
	base := recv.received.Load()
	recv.lat.Store(new(histogram)) // backlog latencies are not commit→client figures
	mA, _ := scrapeMetrics(ctx, srv.MetricsURL, cdcMetricNames...)

	// Write the backlog with the server paused. PostgreSQL ends a
	// walsender whose client is silent for wal_sender_timeout (60 s by
	// default), so the pause must stay well below that.
	logf("cdc: drain: pausing the server, writing %d rows", cfg.Backlog)
	if err := srv.Pause(); err != nil {
		return nil, fmt.Errorf("pausing the server: %w", err)
	}
	paused := true
	defer func() {
		if paused {
			_ = srv.Resume()
		}
	}()
	wStart := time.Now()
	w.saturate(ctx, time.Time{}, int64(cfg.Backlog))
	dr.WriteS = time.Since(wStart).Seconds()
	dr.WriteRowsPerSec = float64(cfg.Backlog) / dr.WriteS
	var endLSN string
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint`, startLSN).Scan(&endLSN, &dr.WALBytes); err != nil {
		return nil, err
	}
	logf("cdc: drain: %d rows (%d WAL bytes) written in %.2fs; resuming the server", cfg.Backlog, dr.WALBytes, dr.WriteS)

	// The server drains alone.
	cpuA, err := srv.Sample()
	if err != nil {
		return nil, err
	}
	tA := time.Now()
	if err := srv.Resume(); err != nil {
		return nil, fmt.Errorf("resuming the server: %w", err)
	}
	paused = false
	if cfg.Subs == 0 {
		dr.ServerComplete = waitMetric(ctx, srv.MetricsURL, "snorky_cdc_changes_total", mA["snorky_cdc_changes_total"]+float64(cfg.Backlog), cfg.Drain)
	} else {
		dr.ServerComplete = recv.waitFor(ctx, base+uint64(cfg.Backlog), cfg.Drain)
	}
	tB := time.Now()
	if dr.ServerComplete && cfg.Subs > 0 {
		// The last delivery's own time, not the poll's.
		tB = recv.base.Add(time.Duration(recv.last.Load()))
	}
	cpuB, err := srv.Sample()
	if err != nil {
		return nil, err
	}
	mB, _ := scrapeMetrics(ctx, srv.MetricsURL, cdcMetricNames...)
	dr.ServerDelivered = recv.received.Load() - base
	if cfg.Subs == 0 {
		dr.ServerDelivered = uint64(max(metricDelta(mA, mB, "snorky_cdc_changes_total"), 0))
	}
	dr.ServerS = tB.Sub(tA).Seconds()
	dr.ServerRowsPerSec = float64(dr.ServerDelivered) / dr.ServerS
	cpu := cpuB.CPU - cpuA.CPU
	dr.ServerCores = cpu.Seconds() / dr.ServerS
	if dr.ServerDelivered > 0 {
		dr.ServerCPUPerRowUS = micros(cpu) / float64(dr.ServerDelivered)
	}
	dr.MetricChanges = metricDelta(mA, mB, "snorky_cdc_changes_total")
	logf("cdc: drain: server delivered %d rows in %.2fs (%.0f rows/s, %.2f cores)", dr.ServerDelivered, dr.ServerS, dr.ServerRowsPerSec, dr.ServerCores)

	// pg_recvlogical drains alone, from its own slot, to the end LSN.
	refCtx, cancel := context.WithTimeout(ctx, cfg.Drain)
	defer cancel()
	cmd := exec.CommandContext(refCtx, filepath.Join(db.bin, "pg_recvlogical"),
		"-d", db.URL, "--slot", cfg.RefSlot, "--start", "-P", "pgoutput",
		"-o", "proto_version=1", "-o", "publication_names="+cfg.Publication,
		"-f", "/dev/null", "--endpos", endLSN, "--no-loop", "-s", "1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	rStart := time.Now()
	err = cmd.Run()
	dr.RefS = time.Since(rStart).Seconds()
	if cmd.ProcessState != nil {
		dr.RefCPUS = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	if err != nil {
		dr.RefError = fmt.Sprintf("%v: %s", err, tail([]byte(stderr.String()), 300))
	} else {
		dr.RefComplete = true
		dr.RefRowsPerSec = float64(cfg.Backlog) / dr.RefS
		if dr.RefRowsPerSec > 0 {
			dr.Ratio = dr.ServerRowsPerSec / dr.RefRowsPerSec
		}
	}
	logf("cdc: drain: pg_recvlogical took %.2fs (%.0f rows/s)", dr.RefS, dr.RefRowsPerSec)
	return dr, nil
}

// waitMetric polls the server's metric name every 10 ms until it reaches
// target; it reports whether it did within timeout.
func waitMetric(ctx context.Context, url, name string, target float64, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reached := false
	_ = poll(ctx, 10*time.Millisecond, func() bool {
		m, err := scrapeMetrics(ctx, url, name)
		reached = err == nil && m[name] >= target
		return reached
	})
	return reached
}

func printCDC(w io.Writer, r *cdcResult) {
	mode := "saturate"
	if r.Mode == "rate" {
		mode = fmt.Sprintf("rate %.0f rows/s", r.TargetRate)
	}
	fmt.Fprintf(w, "cdc: %d subscriptions (simple dealer), %s, %d writers, %d rows per transaction, %.0fs (set up in %.1fs)\n",
		r.Subs, mode, r.Writers, r.TxRows, r.DurationS, r.ConnectS)
	fmt.Fprintf(w, "  committed       %d rows in %d transactions (%.0f rows/s), %d errors", r.Rows, r.Txns, r.RowsPerSec, r.WriteErrors)
	if r.FirstWriteError != "" {
		fmt.Fprintf(w, " (first: %s)", r.FirstWriteError)
	}
	fmt.Fprintln(w)
	what := "delivered      "
	if r.Subs == 0 {
		what = "decoded (metric)"
	}
	fmt.Fprintf(w, "  %s %d, lost %d (%.3f%%), %.0f row changes/s over %.2fs\n",
		what, r.Received, r.Lost, r.LossPct, r.DeliveredPerSec, r.WindowS)
	fmt.Fprintf(w, "  server metrics  cdc changes +%.0f, cdc transactions +%.0f, datasync deliveries +%.0f\n",
		r.MetricChanges, r.MetricTxns, r.MetricDeliveries)
	l := r.Latency
	fmt.Fprintf(w, "  commit→client   p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  mean %.0f µs  (n=%d)\n",
		l.P50US, l.P90US, l.P99US, l.P999US, l.MaxUS, l.MeanUS, l.Count)
	c := r.WriteCall
	fmt.Fprintf(w, "  INSERT call     p50 %.0f  p99 %.0f  max %.0f µs\n", c.P50US, c.P99US, c.MaxUS)
	fmt.Fprintf(w, "  server CPU      %.2fs (%.2f cores), %.2f µs per row change; RSS %d KiB\n",
		r.ServerCPUS, r.ServerCores, r.ServerCPUPerRowUS, r.ServerRSSEndKiB)
	if r.Nodes > 1 {
		fmt.Fprintf(w, "  cluster         %d nodes and a NATS server; the CPU above is their sum, NATS's share %.2fs (RSS is node 1's)\n", r.Nodes, r.NATSCPUS)
	}
	fmt.Fprintf(w, "  runner CPU      %.2fs; other processes (PostgreSQL) %.2fs (host busy %.0f%%)\n", r.ClientCPUS, r.OtherCPUS, r.HostCPUPct)
	if d := r.Drain; d != nil {
		fmt.Fprintf(w, "  backlog         %d rows, %d WAL bytes, written in %.2fs (%.0f rows/s) with the server paused\n",
			d.Rows, d.WALBytes, d.WriteS, d.WriteRowsPerSec)
		fmt.Fprintf(w, "  server drain    %d rows in %.2fs: %.0f rows/s, %.2f cores, %.2f µs CPU per row (complete: %v; cdc changes +%.0f)\n",
			d.ServerDelivered, d.ServerS, d.ServerRowsPerSec, d.ServerCores, d.ServerCPUPerRowUS, d.ServerComplete, d.MetricChanges)
		if d.RefComplete {
			fmt.Fprintf(w, "  pg_recvlogical  %.2fs: %.0f rows/s, %.2fs CPU of its own\n", d.RefS, d.RefRowsPerSec, d.RefCPUS)
			fmt.Fprintf(w, "  server / pg_recvlogical  %.2f\n", d.Ratio)
		} else {
			fmt.Fprintf(w, "  pg_recvlogical  failed after %.2fs: %s\n", d.RefS, d.RefError)
		}
	}
	if r.SubsClosed > 0 {
		fmt.Fprintf(w, "  closed by server %d subscriptions, close codes %s\n", r.SubsClosed, formatCodes(r.CloseCodes))
	}
}
