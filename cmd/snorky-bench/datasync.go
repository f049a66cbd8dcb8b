package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// datasyncConfig is the datasync scenario: N subscriptions of one dealer,
// each acquired on its own WebSocket, fed by publishDeltas through the
// backend (no database).
type datasyncConfig struct {
	Subs       int
	Dealer     string        // "simple" (distinct keys, each delta to one subscription) or "broadcast"
	Rate       float64       // deltas per second; 0 with Saturate
	Saturate   bool          // publish as fast as delivery keeps up (bounded by Window)
	Duration   time.Duration // how long to publish
	Batch      int           // deltas per publishDeltas call (0: 100 simple, 10 broadcast)
	Inflight   int           // concurrent publishDeltas calls
	Window     int           // Saturate: deltas published but not yet fully delivered (0: 4×batch×inflight)
	Drain      time.Duration // how long to wait for the last deliveries
	Model      string
	Service    string // frontend DataSync service name
	BackendSvc string // backend DataSync service name
	DialConc   int
	PerAddr    int
}

func (c *datasyncConfig) register(fs *flag.FlagSet) {
	fs.IntVar(&c.Subs, "subs", 1000, "subscriptions, each acquired on its own WebSocket")
	fs.StringVar(&c.Dealer, "dealer", "simple", "simple (keys 0..subs-1, each delta to one subscription) or broadcast (each delta to all)")
	fs.Float64Var(&c.Rate, "rate", 0, "deltas per second (or --saturate)")
	fs.BoolVar(&c.Saturate, "saturate", false, "publish as fast as the server delivers (bounded by --window)")
	fs.DurationVar(&c.Duration, "duration", 15*time.Second, "how long to publish")
	fs.IntVar(&c.Batch, "batch", 0, "deltas per publishDeltas call (default 100 for simple, 10 for broadcast)")
	fs.IntVar(&c.Inflight, "inflight", 4, "concurrent publishDeltas calls")
	fs.IntVar(&c.Window, "window", 0, "with --saturate: deltas allowed ahead of full delivery (default 4 × batch × inflight)")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "how long to wait for outstanding deliveries after publishing")
	fs.StringVar(&c.Model, "model", "Item", "model name of the deltas")
	fs.StringVar(&c.Service, "service", "datasync", "frontend DataSync service name")
	fs.StringVar(&c.BackendSvc, "backend-service", "datasync_backend", "backend DataSync service name")
	fs.IntVar(&c.DialConc, "dial-concurrency", 64, "concurrent subscription set-ups")
	fs.IntVar(&c.PerAddr, "per-source-addr", 5000, "client connections per loopback source address")
}

// Validate checks the scenario's bounds and fills the defaults that depend
// on other flags.
func (c *datasyncConfig) Validate() error {
	if c.Batch == 0 {
		c.Batch = 100
		if c.Dealer == "broadcast" {
			c.Batch = 10
		}
	}
	if c.Window == 0 {
		c.Window = 4 * c.Batch * c.Inflight
	}
	switch {
	case c.Subs < 1 || c.Subs > 19000:
		return fmt.Errorf("--subs: got %d, want 1..19000 (one process, 20,000 descriptors)", c.Subs)
	case c.Dealer != "simple" && c.Dealer != "broadcast":
		return fmt.Errorf("--dealer: got %q, want simple or broadcast", c.Dealer)
	case c.Saturate == (c.Rate > 0):
		return errors.New("give exactly one of --rate R (R > 0) and --saturate")
	case c.Duration <= 0 || c.Duration > time.Hour:
		return fmt.Errorf("--duration: got %v, want (0, 1h]", c.Duration)
	case c.Batch < 1 || c.Batch > 5000:
		return fmt.Errorf("--batch: got %d, want 1..5000", c.Batch)
	case c.Inflight < 1 || c.Inflight > 256:
		return fmt.Errorf("--inflight: got %d, want 1..256", c.Inflight)
	case c.Window < c.Batch:
		return fmt.Errorf("--window: got %d, want at least --batch (%d)", c.Window, c.Batch)
	case c.Model == "" || c.DialConc < 1 || c.PerAddr < 1:
		return errors.New("--model must be set; --dial-concurrency and --per-source-addr must be positive")
	}
	return nil
}

// fanout is how many subscriptions each delta reaches.
func (c *datasyncConfig) fanout() int {
	if c.Dealer == "broadcast" {
		return c.Subs
	}
	return 1
}

// dealerName is the configured dealer the scenario subscribes to.
func (c *datasyncConfig) dealerName() string {
	if c.Dealer == "broadcast" {
		return "All"
	}
	return "ByKey"
}

// datasyncServerConfig is the models and dealers section of the spawned
// server for the datasync scenario: a model without a table.
func datasyncServerConfig(model string) string {
	return fmt.Sprintf(`models:
  %[1]s: {}
dealers:
  ByKey: {model: %[1]s, kind: simple, key: key}
  All: {model: %[1]s, kind: broadcast}
`, model)
}

// datasyncResult is the scenario's summary.
type datasyncResult struct {
	Scenario   string  `json:"scenario"`
	Subs       int     `json:"subs"`
	Dealer     string  `json:"dealer"`
	Mode       string  `json:"mode"`
	TargetRate float64 `json:"target_rate,omitempty"`
	DurationS  float64 `json:"duration_s"`
	Batch      int     `json:"batch"`
	Inflight   int     `json:"inflight"`
	ConnectS   float64 `json:"connect_s"`

	Deltas            uint64  `json:"deltas_published"`
	Calls             uint64  `json:"publish_calls"`
	PublishErrors     uint64  `json:"publish_errors"`
	FirstPublishError string  `json:"first_publish_error,omitempty"`
	DeltasPerSec      float64 `json:"deltas_per_s"`

	Expected        uint64  `json:"expected"`
	Received        uint64  `json:"received"`
	Lost            int64   `json:"lost"`
	LossPct         float64 `json:"loss_pct"`
	WindowS         float64 `json:"window_s"`
	DeliveredPerSec float64 `json:"delivered_per_s"`

	Latency     latencySummary `json:"latency"`
	PublishCall latencySummary `json:"publish_call"`

	ServerCPUS          float64 `json:"server_cpu_s"`
	ServerCores         float64 `json:"server_cores"`
	ServerCPUPerDelivUS float64 `json:"server_cpu_us_per_delivery"`
	ServerCPUPerDeltaUS float64 `json:"server_cpu_us_per_delta"`
	ServerRSSEndKiB     int64   `json:"server_rss_end_kib"`
	ServerHWMKiB        int64   `json:"server_rss_peak_kib"`
	ClientCPUS          float64 `json:"client_cpu_s"`
	OtherCPUS           float64 `json:"other_cpu_s"`
	HostCPUPct          float64 `json:"host_cpu_pct"`

	MetricDeliveries float64        `json:"metric_deliveries,omitempty"` // snorky_datasync_deliveries_total over the run
	SubsClosed       int            `json:"subs_closed"`
	CloseCodes       map[string]int `json:"close_codes,omitempty"`
}

// appendDeltaBatch appends a publishDeltas request with n insert deltas,
// sequence numbers seq0..seq0+n-1; the row's key is keyOf(seq) and ts the
// send time on the bench clock.
func appendDeltaBatch(dst []byte, backendSvc, model string, seq0 int64, n int, keyOf func(int64) int64, ts int64) []byte {
	dst = append(dst, `{"service":`...)
	dst = strconv.AppendQuote(dst, backendSvc)
	dst = append(dst, `,"message":{"command":"publishDeltas","params":{"deltas":[`...)
	for i := range int64(n) {
		if i > 0 {
			dst = append(dst, ',')
		}
		seq := seq0 + i
		dst = append(dst, `{"type":"insert","model":`...)
		dst = strconv.AppendQuote(dst, model)
		dst = append(dst, `,"data":{"id":`...)
		dst = strconv.AppendInt(dst, seq, 10)
		dst = append(dst, `,"key":`...)
		dst = strconv.AppendInt(dst, keyOf(seq), 10)
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendInt(dst, seq, 10)
		dst = append(dst, `,"ts":`...)
		dst = strconv.AppendInt(dst, ts, 10)
		dst = append(dst, "}}"...)
	}
	return append(dst, "]}}}"...)
}

// runDatasync runs the scenario against srv.
func runDatasync(ctx context.Context, cfg datasyncConfig, srv *server, logf func(string, ...any)) (*datasyncResult, error) {
	recv := newDeltaReceiver()
	be, closeBE := newBackendClient(srv, max(cfg.Inflight, cfg.DialConc))
	defer closeBE()
	d := &wsDialer{url: srv.WSURL, src: newSourceAddrs(0, cfg.PerAddr), readBuf: 4096, writeBuf: 1024, timeout: 10 * time.Second}

	connectStart := time.Now()
	logf("datasync: authorising and acquiring %d %s subscriptions from %v", cfg.Subs, cfg.Dealer, d.src)
	subs, err := subscribeAll(ctx, srv, d, be, cfg.Service, cfg.BackendSvc, cfg.Subs, cfg.DialConc,
		func(i int) (string, any) {
			if cfg.Dealer == "broadcast" {
				return cfg.dealerName(), nil
			}
			return cfg.dealerName(), i
		}, recv, logf)
	var codes map[string]int
	defer func() {
		if codes == nil {
			recv.closeAll(subs)
		}
	}()
	if err != nil {
		return nil, err
	}
	connectTime := time.Since(connectStart)
	logf("datasync: %d subscriptions acquired in %.1fs", cfg.Subs, connectTime.Seconds())

	res := &datasyncResult{
		Scenario: "datasync", Subs: cfg.Subs, Dealer: cfg.Dealer, Mode: "rate", TargetRate: cfg.Rate,
		DurationS: cfg.Duration.Seconds(), Batch: cfg.Batch, Inflight: cfg.Inflight, ConnectS: connectTime.Seconds(),
	}
	if cfg.Saturate {
		res.Mode = "saturate"
	}
	fan := uint64(cfg.fanout())
	keyOf := func(seq int64) int64 { return seq % int64(cfg.Subs) }
	metricNames := []string{"snorky_datasync_deliveries_total"}
	m0, _ := scrapeMetrics(ctx, srv.MetricsURL, metricNames...)
	u0, err := sampleUsage(srv)
	if err != nil {
		return nil, err
	}

	// Publishers take batch tickets (the first sequence number) from the
	// generator. failed counts deliveries that will never come because
	// their call failed, so that flow control does not wait for them.
	var (
		published, calls, pubErrs, failed atomic.Uint64
		firstErr                          atomic.Pointer[string]
		pubLat                            = new(histogram)
		wg                                sync.WaitGroup
	)
	pubCtx, cancelPub := context.WithCancel(ctx)
	defer cancelPub()
	tickets := make(chan int64, cfg.Inflight)
	t0 := recv.clock()
	for range cfg.Inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body, reply []byte
			for seq0 := range tickets {
				start := time.Now()
				body = appendDeltaBatch(body[:0], cfg.BackendSvc, cfg.Model, seq0, cfg.Batch, keyOf, recv.clock())
				var err error
				if reply, err = be.post(pubCtx, body, reply); err != nil {
					failed.Add(uint64(cfg.Batch) * fan)
					if pubErrs.Add(1) == 1 {
						msg := err.Error()
						firstErr.Store(&msg)
					}
					recv.signal()
					continue
				}
				pubLat.Record(time.Since(start))
				calls.Add(1)
				published.Add(uint64(cfg.Batch))
			}
		}()
	}
	var lastPub, lastRecv uint64
	stopProgress := everySecond(ctx, func(i int) {
		p, r := published.Load(), recv.received.Load()
		logf("datasync: t=%ds deltas %d/s, delivered %d/s, connections lost %d", i, p-lastPub, r-lastRecv, recv.gone.Load())
		lastPub, lastRecv = p, r
	})

	// Generate.
	end := time.Now().Add(cfg.Duration)
	batch := int64(cfg.Batch)
	var issued int64 // deltas handed out
	emit := func() bool {
		select {
		case tickets <- issued:
			issued += batch
			return true
		case <-pubCtx.Done():
			return false
		}
	}
	if cfg.Saturate {
		window := uint64(cfg.Window) * fan
		for time.Now().Before(end) {
			// Wait until the deltas outstanding fit in the window.
			for uint64(issued)*fan > recv.received.Load()+failed.Load()+window && time.Now().Before(end) && pubCtx.Err() == nil {
				select {
				case <-recv.notify:
				case <-time.After(10 * time.Millisecond):
				case <-pubCtx.Done():
				}
			}
			if !emit() {
				break
			}
		}
	} else {
		interval := time.Duration(float64(time.Second) * float64(batch) / cfg.Rate)
		start := time.Now()
		timer := time.NewTimer(0)
		defer timer.Stop()
		for n := int64(0); ; n++ {
			next := start.Add(time.Duration(n) * interval)
			if !next.Before(end) {
				break
			}
			timer.Reset(time.Until(next))
			select {
			case <-timer.C:
			case <-pubCtx.Done():
			}
			if !emit() {
				break
			}
		}
	}
	close(tickets)
	wg.Wait()
	tPubEnd := recv.clock()

	expected := published.Load() * fan
	recv.waitFor(ctx, expected, cfg.Drain)
	stopProgress()

	u1, err := sampleUsage(srv)
	if err != nil {
		return nil, fmt.Errorf("sampling the server after the run: %w", err)
	}
	spent := u0.until(u1)
	m1, _ := scrapeMetrics(ctx, srv.MetricsURL, metricNames...)

	received := recv.received.Load()
	res.Deltas, res.Calls, res.PublishErrors = published.Load(), calls.Load(), pubErrs.Load()
	if p := firstErr.Load(); p != nil {
		res.FirstPublishError = *p
	}
	res.DeltasPerSec = float64(res.Deltas) / (float64(tPubEnd-t0) / 1e9)
	res.Expected, res.Received = expected, received
	res.Lost = int64(expected) - int64(received)
	if expected > 0 {
		res.LossPct = 100 * float64(res.Lost) / float64(expected)
	}
	window := time.Duration(max(recv.last.Load(), tPubEnd) - t0)
	res.WindowS = window.Seconds()
	if window > 0 {
		res.DeliveredPerSec = float64(received) / window.Seconds()
	}
	res.Latency = recv.lat.Load().Summary()
	res.PublishCall = pubLat.Summary()
	cpu := spent.Server
	res.ServerCPUS = cpu.Seconds()
	if window > 0 {
		res.ServerCores = cpu.Seconds() / window.Seconds()
	}
	if received > 0 {
		res.ServerCPUPerDelivUS = micros(cpu) / float64(received)
	}
	if res.Deltas > 0 {
		res.ServerCPUPerDeltaUS = micros(cpu) / float64(res.Deltas)
	}
	res.ServerRSSEndKiB, res.ServerHWMKiB = u1.server.RSSKiB, u1.server.HWMKiB
	res.ClientCPUS, res.HostCPUPct, res.OtherCPUS = spent.ClientS, spent.HostPct, spent.OtherS
	if v := metricDelta(m0, m1, "snorky_datasync_deliveries_total"); v >= 0 {
		res.MetricDeliveries = v
	}
	codes = recv.closeAll(subs)
	if codes == nil {
		codes = map[string]int{}
	}
	for _, n := range codes {
		res.SubsClosed += n
	}
	if len(codes) > 0 {
		res.CloseCodes = codes
	}
	return res, nil
}

func printDatasync(w io.Writer, r *datasyncResult) {
	mode := "saturate"
	if r.Mode == "rate" {
		mode = fmt.Sprintf("rate %.0f deltas/s", r.TargetRate)
	}
	fmt.Fprintf(w, "datasync: %d subscriptions, %s dealer, %s, batches of %d, %d in flight, %.0fs (set up in %.1fs)\n",
		r.Subs, r.Dealer, mode, r.Batch, r.Inflight, r.DurationS, r.ConnectS)
	fmt.Fprintf(w, "  published       %d deltas in %d calls (%.0f deltas/s), %d errors", r.Deltas, r.Calls, r.DeltasPerSec, r.PublishErrors)
	if r.FirstPublishError != "" {
		fmt.Fprintf(w, " (first: %s)", r.FirstPublishError)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  delivered       %d of %d expected, lost %d (%.3f%%), %.0f msgs/s over %.2fs\n",
		r.Received, r.Expected, r.Lost, r.LossPct, r.DeliveredPerSec, r.WindowS)
	if r.MetricDeliveries > 0 {
		fmt.Fprintf(w, "  server metric   snorky_datasync_deliveries_total +%.0f\n", r.MetricDeliveries)
	}
	l := r.Latency
	fmt.Fprintf(w, "  latency (µs)    p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  mean %.0f  (n=%d)\n",
		l.P50US, l.P90US, l.P99US, l.P999US, l.MaxUS, l.MeanUS, l.Count)
	p := r.PublishCall
	fmt.Fprintf(w, "  publish call    p50 %.0f  p99 %.0f  max %.0f µs\n", p.P50US, p.P99US, p.MaxUS)
	fmt.Fprintf(w, "  server CPU      %.2fs (%.2f cores), %.2f µs per delivered delta, %.2f µs per published delta\n",
		r.ServerCPUS, r.ServerCores, r.ServerCPUPerDelivUS, r.ServerCPUPerDeltaUS)
	fmt.Fprintf(w, "  server RSS      %d KiB at end, peak %d KiB\n", r.ServerRSSEndKiB, r.ServerHWMKiB)
	fmt.Fprintf(w, "  runner CPU      %.2fs; other processes %.2fs (host busy %.0f%%)\n", r.ClientCPUS, r.OtherCPUS, r.HostCPUPct)
	if r.SubsClosed > 0 {
		fmt.Fprintf(w, "  closed by server %d subscriptions, close codes %s\n", r.SubsClosed, formatCodes(r.CloseCodes))
	}
}
