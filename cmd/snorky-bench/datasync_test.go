package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestAppendDeltaBatch(t *testing.T) {
	tests := []struct {
		name  string
		seq0  int64
		n     int
		subs  int64
		ts    int64
		model string
	}{
		{"one", 0, 1, 10, 5, "Item"},
		{"round robin wraps", 8, 5, 10, 123456789012, "Item"},
		{"model needing escapes", 1, 2, 3, 0, `It"em`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keyOf := func(seq int64) int64 { return seq % tt.subs }
			b := appendDeltaBatch([]byte("junk"), "datasync_backend", tt.model, tt.seq0, tt.n, keyOf, tt.ts)
			if !strings.HasPrefix(string(b), "junk") {
				t.Fatalf("got %q, want the batch appended after the existing bytes", b)
			}
			var env struct {
				Service string `json:"service"`
				Message struct {
					Command string `json:"command"`
					Params  struct {
						Deltas []struct {
							Type  string `json:"type"`
							Model string `json:"model"`
							Data  struct {
								ID, Key, Seq, TS int64
							} `json:"data"`
						} `json:"deltas"`
					} `json:"params"`
				} `json:"message"`
			}
			if err := json.Unmarshal(b[4:], &env); err != nil {
				t.Fatalf("got invalid JSON %s: %v", b[4:], err)
			}
			if env.Service != "datasync_backend" || env.Message.Command != "publishDeltas" {
				t.Errorf("got service %q command %q, want datasync_backend publishDeltas", env.Service, env.Message.Command)
			}
			if got := len(env.Message.Params.Deltas); got != tt.n {
				t.Fatalf("got %d deltas, want %d", got, tt.n)
			}
			for i, d := range env.Message.Params.Deltas {
				seq := tt.seq0 + int64(i)
				if d.Type != "insert" || d.Model != tt.model {
					t.Errorf("delta %d: got type %q model %q, want insert %q", i, d.Type, d.Model, tt.model)
				}
				if d.Data.Seq != seq || d.Data.ID != seq || d.Data.Key != seq%tt.subs || d.Data.TS != tt.ts {
					t.Errorf("delta %d: got %+v, want id=seq=%d key=%d ts=%d", i, d.Data, seq, seq%tt.subs, tt.ts)
				}
			}
		})
	}
}

func TestDatasyncConfigValidate(t *testing.T) {
	base := func() datasyncConfig {
		return datasyncConfig{Subs: 100, Dealer: "simple", Saturate: true, Duration: time.Second, Inflight: 4,
			Drain: time.Second, Model: "Item", DialConc: 8, PerAddr: 100}
	}
	tests := []struct {
		name       string
		mod        func(*datasyncConfig)
		wantErr    string
		wantBatch  int
		wantWindow int
	}{
		{"simple defaults", func(*datasyncConfig) {}, "", 100, 1600},
		{"broadcast defaults", func(c *datasyncConfig) { c.Dealer = "broadcast" }, "", 10, 160},
		{"explicit batch and window", func(c *datasyncConfig) { c.Batch, c.Window = 7, 7 }, "", 7, 7},
		{"rate and saturate", func(c *datasyncConfig) { c.Rate = 10 }, "exactly one", 0, 0},
		{"neither", func(c *datasyncConfig) { c.Saturate = false }, "exactly one", 0, 0},
		{"bad dealer", func(c *datasyncConfig) { c.Dealer = "filter" }, "--dealer", 0, 0},
		{"too many subs", func(c *datasyncConfig) { c.Subs = 20000 }, "--subs", 0, 0},
		{"window below batch", func(c *datasyncConfig) { c.Batch, c.Window = 10, 5 }, "--window", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if c.Batch != tt.wantBatch || c.Window != tt.wantWindow {
				t.Errorf("got batch %d window %d, want %d and %d", c.Batch, c.Window, tt.wantBatch, tt.wantWindow)
			}
		})
	}
}

func TestCDCConfigValidate(t *testing.T) {
	base := func() cdcConfig {
		return cdcConfig{Subs: 100, Rate: 100, Duration: time.Second, Writers: 2, Payload: 16, Backlog: 10,
			Slot: "snorky_bench", Publication: "snorky_bench", RefSlot: "bench_ref", Drain: time.Second, DialConc: 8, PerAddr: 100}
	}
	tests := []struct {
		name       string
		mod        func(*cdcConfig)
		wantErr    string
		wantTxRows int
	}{
		{"rate defaults to single-row transactions", func(*cdcConfig) {}, "", 1},
		{"saturate defaults to 100-row transactions", func(c *cdcConfig) { c.Rate, c.Saturate = 0, true }, "", 100},
		{"explicit tx rows", func(c *cdcConfig) { c.TxRows = 10 }, "", 10},
		{"rate and saturate", func(c *cdcConfig) { c.Saturate = true }, "exactly one", 0},
		{"quoted slot name", func(c *cdcConfig) { c.Slot = `a"b` }, "SQL names", 0},
		{"same slots", func(c *cdcConfig) { c.RefSlot = c.Slot }, "distinct", 0},
		{"no writers", func(c *cdcConfig) { c.Writers = 0 }, "--writers", 0},
		{"no subscriptions counts at /metrics", func(c *cdcConfig) { c.Subs = 0 }, "", 1},
		{"negative subscriptions", func(c *cdcConfig) { c.Subs = -1 }, "--subs", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if c.TxRows != tt.wantTxRows {
				t.Errorf("got tx rows %d, want %d", c.TxRows, tt.wantTxRows)
			}
		})
	}
}

func TestSQLName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"snorky_bench", true}, {"_x1", true}, {"", false}, {"1abc", false}, {"Abc", false},
		{"a-b", false}, {"a'b", false}, {strings.Repeat("a", 64), false},
	}
	for _, tt := range tests {
		if got := sqlName(tt.in); got != tt.want {
			t.Errorf("sqlName(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	const text = `# HELP snorky_cdc_changes_total Row changes handed to the sink.
# TYPE snorky_cdc_changes_total counter
snorky_cdc_changes_total 123456
snorky_cdc_changes_total_other 9
snorky_datasync_deliveries_total 1.5e+06
snorky_ws_messages_out_total{service="datasync"} 10
snorky_ws_messages_out_total{service="pubsub",x="a}b"} 5
snorky_cdc_lag_bytes 0 1700000000000
`
	got, err := parseMetrics(strings.NewReader(text),
		"snorky_cdc_changes_total", "snorky_datasync_deliveries_total", "snorky_ws_messages_out_total", "snorky_cdc_lag_bytes", "absent")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"snorky_cdc_changes_total":         123456,
		"snorky_datasync_deliveries_total": 1.5e6,
		"snorky_ws_messages_out_total":     15,
		"snorky_cdc_lag_bytes":             0,
	}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %v, want %v", k, got[k], v)
		}
	}
	if _, err := parseMetrics(strings.NewReader("snorky_x{a=\"b\"\n"), "snorky_x"); err == nil {
		t.Error("got no error for unterminated labels, want one")
	}
	if _, err := parseMetrics(strings.NewReader("snorky_x abc\n"), "snorky_x"); err == nil {
		t.Error("got no error for a non-numeric value, want one")
	}
}

func TestMetricDelta(t *testing.T) {
	before := map[string]float64{"a": 10}
	after := map[string]float64{"a": 25, "b": 3}
	if got := metricDelta(before, after, "a"); got != 15 {
		t.Errorf("metricDelta(a) = %v, want 15", got)
	}
	if got := metricDelta(before, after, "b"); got != -1 {
		t.Errorf("metricDelta(b) = %v, want -1 (absent before)", got)
	}
	if got := metricDelta(nil, after, "a"); got != -1 {
		t.Errorf("metricDelta(nil before) = %v, want -1", got)
	}
}

func TestSiblingURL(t *testing.T) {
	tests := []struct{ in, path, want string }{
		{"http://127.0.0.1:5002/backend", "/metrics", "http://127.0.0.1:5002/metrics"},
		{"http://127.0.0.1:5002/a/b", "/readyz", "http://127.0.0.1:5002/readyz"},
		{"http://127.0.0.1:5002", "/metrics", "http://127.0.0.1:5002/metrics"},
	}
	for _, tt := range tests {
		if got := siblingURL(tt.in, tt.path); got != tt.want {
			t.Errorf("siblingURL(%q, %q) = %q, want %q", tt.in, tt.path, got, tt.want)
		}
	}
}

func TestDeltaReceiverWaitFor(t *testing.T) {
	r := newDeltaReceiver()
	done := make(chan bool)
	go func() { done <- r.waitFor(context.Background(), 3, time.Minute) }()
	for range 3 {
		r.received.Add(1)
		r.signal()
	}
	if !<-done {
		t.Error("waitFor = false after 3 deliveries, want true")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r.waitFor(ctx, 10, time.Minute) {
		t.Error("waitFor with a cancelled context = true, want false")
	}
}
