package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestMain lets the test binary serve as a conns worker, as the real binary
// does when runConns re-executes itself.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "conns" {
		if err := runConnsWorker(context.Background(), os.Args[1:], os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString("worker: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// buildServer builds cmd/snorky once for the end-to-end tests.
func buildServer(t *testing.T) string {
	t.Helper()
	bin, err := findServer(t.Context(), t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestEndToEnd runs small versions of every scenario against the real server.
// It builds and spawns cmd/snorky, so it runs only with SNORKY_BENCH_E2E=1.
func TestEndToEnd(t *testing.T) {
	if os.Getenv("SNORKY_BENCH_E2E") != "1" {
		t.Skip("set SNORKY_BENCH_E2E=1 to run the end-to-end benchmark test")
	}
	bin := buildServer(t)
	runJSON := func(t *testing.T, out any, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		var stdout, stderr bytes.Buffer
		args = append(args, "--server-bin", bin, "--json")
		if err := run(ctx, args, &stdout, &stderr); err != nil {
			t.Fatalf("run %v: %v\n%s", args, err, stderr.String())
		}
		if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
			t.Fatalf("run %v printed invalid JSON: %v\n%s", args, err, stdout.String())
		}
	}

	for _, via := range []string{"backend", "ws"} {
		for _, mode := range [][]string{{"--rate", "100"}, {"--saturate"}} {
			t.Run("pubsub "+via+" "+mode[0], func(t *testing.T) {
				var res pubsubResult
				runJSON(t, &res, append([]string{"pubsub", "--subscribers", "20", "--duration", "500ms", "--via", via}, mode...)...)
				if res.Published == 0 || res.PublishErrors != 0 {
					t.Fatalf("published %d with %d errors (%s), want > 0 and none", res.Published, res.PublishErrors, res.FirstPublishError)
				}
				if res.Received != res.Published*20 || res.Lost != 0 {
					t.Errorf("received %d, lost %d, want %d and 0", res.Received, res.Lost, res.Published*20)
				}
				if res.Latency.Count != res.Received {
					t.Errorf("latency samples %d, want %d", res.Latency.Count, res.Received)
				}
				if res.ServerRSSEndKiB <= 0 {
					t.Errorf("server RSS %d KiB, want > 0", res.ServerRSSEndKiB)
				}
			})
		}
	}

	for _, dealer := range []string{"simple", "broadcast"} {
		for _, mode := range [][]string{{"--rate", "2000"}, {"--saturate"}} {
			t.Run("datasync "+dealer+" "+mode[0], func(t *testing.T) {
				const subs = 30
				var res datasyncResult
				runJSON(t, &res, append([]string{"datasync", "--subs", strconv.Itoa(subs), "--dealer", dealer, "--duration", "500ms", "--batch", "10"}, mode...)...)
				if res.Deltas == 0 || res.PublishErrors != 0 {
					t.Fatalf("published %d with %d errors (%s), want > 0 and none", res.Deltas, res.PublishErrors, res.FirstPublishError)
				}
				want := res.Deltas
				if dealer == "broadcast" {
					want *= subs
				}
				if res.Expected != want || res.Received != want || res.Lost != 0 {
					t.Errorf("expected %d, received %d, lost %d, want %d, %d and 0", res.Expected, res.Received, res.Lost, want, want)
				}
				if res.Latency.Count != res.Received {
					t.Errorf("latency samples %d, want %d", res.Latency.Count, res.Received)
				}
				if res.MetricDeliveries != float64(want) {
					t.Errorf("server metric deliveries %v, want %d", res.MetricDeliveries, want)
				}
			})
		}
	}

	for _, mode := range [][]string{{"--rate", "200"}, {"--saturate", "--backlog", "2000"}} {
		t.Run("cdc "+mode[0], func(t *testing.T) {
			if _, err := findPGBin(""); err != nil {
				t.Skip(err)
			}
			var res cdcResult
			runJSON(t, &res, append([]string{"cdc", "--subs", "20", "--duration", "500ms", "--writers", "2"}, mode...)...)
			if res.Rows == 0 || res.WriteErrors != 0 {
				t.Fatalf("committed %d rows with %d errors (%s), want > 0 and none", res.Rows, res.WriteErrors, res.FirstWriteError)
			}
			if res.Received != res.Rows || res.Lost != 0 {
				t.Errorf("received %d, lost %d, want %d and 0", res.Received, res.Lost, res.Rows)
			}
			if res.MetricChanges != float64(res.Rows) {
				t.Errorf("server metric cdc changes %v, want %d", res.MetricChanges, res.Rows)
			}
			if mode[0] == "--saturate" {
				d := res.Drain
				if d == nil {
					t.Fatal("no drain comparison, want one")
				}
				if !d.ServerComplete || d.ServerDelivered != 2000 {
					t.Errorf("server drained %d rows (complete %v), want 2000", d.ServerDelivered, d.ServerComplete)
				}
				if !d.RefComplete {
					t.Errorf("pg_recvlogical did not finish: %s", d.RefError)
				}
			}
		})
	}

	t.Run("conns", func(t *testing.T) {
		const n = 150
		var res connsResult
		runJSON(t, &res, "conns", "--n", strconv.Itoa(n), "--per-worker", "60", "--settle", "0s")
		if res.Established != n || res.Failed != 0 {
			t.Errorf("established %d, failed %d (%s), want %d and 0", res.Established, res.Failed, res.FirstError, n)
		}
		if res.Workers != 3 {
			t.Errorf("workers = %d, want 3", res.Workers)
		}
		if res.DroppedDuring != 0 {
			t.Errorf("dropped during hold = %d, want 0", res.DroppedDuring)
		}
		if res.ServerFDs < n {
			t.Errorf("server holds %d descriptors, want at least %d", res.ServerFDs, n)
		}
	})
}
