// Command snorky-bench is the whole-system benchmark runner: it starts (or
// attaches to) a Snorky server and drives it over loopback exactly as users
// do, through the WebSocket frontend and the backend HTTP API, then reports
// throughput, latency and the server's CPU time and memory read from /proc.
//
// Scenarios:
//
//	snorky-bench pubsub --subscribers 1000 --saturate --duration 10s
//	snorky-bench pubsub --subscribers 1000 --rate 15 --duration 30s
//	snorky-bench conns --n 19000
//	snorky-bench datasync --subs 10000 --dealer simple --saturate --duration 15s
//	snorky-bench cdc --subs 1000 --rate 1000 --duration 20s
//	snorky-bench cdc --saturate
//
// The runner imports nothing from the server (cdc/pglocal starts the cdc
// scenario's throwaway PostgreSQL). Its parts are kept reusable for further
// scenarios: server.go (spawn through cmd/snorky/snorkytest or attach,
// readiness, stop), proc.go (/proc CPU and RSS), latency.go (a concurrent
// log-linear histogram), wsclient.go (dialing from many loopback source
// addresses, set-up RPCs, the cheap seq/ts scan), dsclient.go (DataSync
// subscriptions, the receiving side, /metrics), and one file per scenario
// (pubsub.go, conns.go, datasync.go, cdc.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if os.Getenv(workerEnv) == "conns" {
		err = runConnsWorker(ctx, os.Args[1:], os.Stdin, os.Stdout)
	} else {
		err = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "snorky-bench:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: snorky-bench <scenario> [flags]

scenarios:
  pubsub   N subscribers on one channel; publish at --rate R or --saturate;
           reports deliveries/s, publish→receive latency, loss, and the
           server's CPU µs per delivered message and RSS
  conns    hold --n idle WebSocket connections (spread over worker
           processes); reports server RSS KiB per connection
  datasync N DataSync subscriptions (simple or broadcast dealer) fed by
           publishDeltas; reports deltas/s, deliveries/s, latency, loss and
           the server's CPU µs per delivered delta
  cdc      N subscriptions fed from PostgreSQL (a throwaway cluster, or
           --database-url); reports row changes/s, commit→client latency,
           server cores, and with --saturate the drain rate of a backlog
           against pg_recvlogical's

Run "snorky-bench <scenario> -h" for its flags. By default the runner builds
and spawns the server itself on free loopback ports; --server-pid with --ws,
--backend and --key measures a running one.
`

// run executes one scenario. Progress goes to stderr, the report to stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, time.Now().Format("15:04:05.000")+" "+format+"\n", a...)
	}
	scenario, args := args[0], args[1:]
	if scenario == natsScenario {
		return runNATSChild(ctx, args, stdout)
	}
	fs := flag.NewFlagSet(scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf serverFlags
	sf.register(fs)
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	timeout := fs.Duration("timeout", 0, "bound on the whole run (default: duration + 3m)")

	var (
		ps pubsubConfig
		cc connsConfig
		dc datasyncConfig
		xc cdcConfig
	)
	switch scenario {
	case "pubsub":
		ps.register(fs)
	case "conns":
		cc.register(fs)
	case "datasync":
		dc.register(fs)
	case "cdc":
		xc.register(fs)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown scenario %q", scenario)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	bound := *timeout
	switch scenario {
	case "pubsub":
		if err := ps.Validate(); err != nil {
			return err
		}
		if bound == 0 {
			bound = ps.Duration + ps.Drain + 3*time.Minute
		}
	case "conns":
		if err := cc.Validate(); err != nil {
			return err
		}
		if bound == 0 {
			bound = cc.Settle + 5*time.Minute
		}
	case "datasync":
		if err := dc.Validate(); err != nil {
			return err
		}
		if bound == 0 {
			bound = dc.Duration + dc.Drain + 5*time.Minute
		}
		sf.extraConfig = datasyncServerConfig(dc.Model)
	case "cdc":
		if err := xc.Validate(); err != nil {
			return err
		}
		if bound == 0 {
			bound = xc.Duration + 2*xc.Drain + 5*time.Minute
		}
	}
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()

	var db *cdcDatabase
	if scenario == "cdc" {
		var err error
		if db, err = openCDCDatabase(ctx, xc, logf); err != nil {
			return err
		}
		db.DropServerSlot = sf.pid == 0
		defer db.Close(logf)
		sf.extraConfig = cdcServerConfig(db.URL, xc)
	}

	var nats *natsProc
	if scenario == "cdc" && xc.Nodes > 1 {
		if sf.pid != 0 {
			return errors.New("--nodes needs servers the runner spawns (not --server-pid)")
		}
		var err error
		if nats, err = startNATS(ctx, logf); err != nil {
			return err
		}
		defer nats.Stop()
		sf.extraConfig += clusterServerConfig(nats.URL)
	}
	srv, err := startServer(ctx, sf, logf)
	if err != nil {
		return err
	}
	defer func() {
		if err := srv.Stop(); err != nil {
			logf("warning: %v", err)
		}
	}()
	nodes := []*server{srv}
	for len(nodes) < xc.Nodes {
		n, err := startServer(ctx, sf, logf)
		if err != nil {
			return err
		}
		defer n.Stop()
		nodes = append(nodes, n)
	}

	var report any
	switch scenario {
	case "pubsub":
		res, err := runPubsub(ctx, ps, srv, logf)
		if err != nil {
			return serverState(srv, err)
		}
		report = res
	case "conns":
		res, err := runConns(ctx, cc, srv, logf)
		if err != nil {
			return serverState(srv, err)
		}
		report = res
	case "datasync":
		res, err := runDatasync(ctx, dc, srv, logf)
		if err != nil {
			return serverState(srv, err)
		}
		report = res
	case "cdc":
		res, err := runCDC(ctx, xc, nodes, nats, db, logf)
		if err != nil {
			return serverState(srv, err)
		}
		report = res
	}
	if srv.Exited() {
		return serverState(srv, errors.New("the server exited during the run"))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	switch r := report.(type) {
	case *pubsubResult:
		printPubsub(stdout, r)
	case *connsResult:
		printConns(stdout, r)
	case *datasyncResult:
		printDatasync(stdout, r)
	case *cdcResult:
		printCDC(stdout, r)
	}
	return nil
}

// serverState adds the server's log tail to err when the server has died.
func serverState(srv *server, err error) error {
	if srv.Exited() {
		return fmt.Errorf("%w (server exited: %v)\n%s", err, srv.proc.Cmd().ProcessState, srv.logTail())
	}
	return err
}

func printPubsub(w io.Writer, r *pubsubResult) {
	mode := r.Mode // saturate, window N
	if r.Mode == "rate" {
		mode = fmt.Sprintf("rate %.0f/s", r.TargetRate)
	}
	fmt.Fprintf(w, "pubsub: %d subscribers, %s via %s, %d-byte messages, %.0fs (connected in %.1fs)\n",
		r.Subscribers, mode, r.Via, r.SizeBytes, r.DurationS, r.ConnectS)
	fmt.Fprintf(w, "  published       %d (%.1f/s), %d errors", r.Published, r.PublishRate, r.PublishErrors)
	if r.FirstPublishError != "" {
		fmt.Fprintf(w, " (first: %s)", r.FirstPublishError)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  delivered       %d of %d expected, lost %d (%.3f%%), %.0f msgs/s over %.2fs\n",
		r.Received, r.Expected, r.Lost, r.LossPct, r.DeliveredPerSec, r.WindowS)
	l := r.Latency
	fmt.Fprintf(w, "  latency (µs)    p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  mean %.0f  (n=%d)\n",
		l.P50US, l.P90US, l.P99US, l.P999US, l.MaxUS, l.MeanUS, l.Count)
	p := r.PublishCall
	fmt.Fprintf(w, "  publish call    p50 %.0f  p99 %.0f  max %.0f µs\n", p.P50US, p.P99US, p.MaxUS)
	fmt.Fprintf(w, "  server CPU      %.2fs (%.0f%% of one core), %.2f µs per delivered message\n",
		r.ServerCPUS, r.ServerCPUPct, r.ServerCPUPerMsgUS)
	fmt.Fprintf(w, "  server RSS      %d KiB at start, %d KiB at end, peak %d KiB\n",
		r.ServerRSSStartKiB, r.ServerRSSEndKiB, r.ServerHWMKiB)
	fmt.Fprintf(w, "  runner CPU      %.2fs; other processes %.2fs (host busy %.0f%%)\n", r.ClientCPUS, r.OtherCPUS, r.HostCPUPct)
	if r.SubscribersClosed > 0 {
		fmt.Fprintf(w, "  closed by server %d subscribers, close codes %s\n", r.SubscribersClosed, formatCodes(r.CloseCodes))
	}
}

func printConns(w io.Writer, r *connsResult) {
	fmt.Fprintf(w, "conns: %d requested, %d established, %d failed, %d workers, %.1fs to connect\n",
		r.Requested, r.Established, r.Failed, r.Workers, r.ConnectS)
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error     %s\n", r.FirstError)
	}
	fmt.Fprintf(w, "  server RSS      %d KiB before, %d KiB after, peak %d KiB\n", r.ServerRSSBefore, r.ServerRSSAfter, r.ServerHWM)
	fmt.Fprintf(w, "  per connection  %.2f KiB of server RSS (subscribed: %v)\n", r.KiBPerConn, r.Subscribed)
	fmt.Fprintf(w, "  server          %d fds, %d threads, %.2fs CPU while connecting\n", r.ServerFDs, r.ServerThreads, r.ServerCPUS)
	fmt.Fprintf(w, "  idle CPU        %.4f cores over the %.0fs settle (pings every 25s by default)\n", r.ServerIdleCores, r.IdleS)
	if r.DroppedDuring > 0 {
		fmt.Fprintf(w, "  dropped by server while held: %d, close codes %s\n", r.DroppedDuring, formatCodes(r.CloseCodes))
	}
}

func formatCodes(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s×%d", k, m[k])
	}
	return b.String()
}

// everySecond calls report(1), report(2), … once a second until the
// returned stop is called; stop waits for the last report to finish.
func everySecond(ctx context.Context, report func(i int)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			report(i)
		}
	}()
	return func() { cancel(); <-done }
}
