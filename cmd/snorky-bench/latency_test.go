package main

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	values := []int64{0, 1, 63, 64, 65, 127, 128, 129, 1000, 1 << 20, 123456789, 1<<62 + 12345, 1<<63 - 1}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		values = append(values, r.Int64N(1<<40))
	}
	for _, v := range values {
		i := bucketOf(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d, want 0..%d", v, i, numBuckets-1)
		}
		lo, hi := bucketBounds(i)
		if v < lo || v > hi {
			t.Fatalf("bucketOf(%d) = %d with bounds [%d, %d], want the value inside", v, i, lo, hi)
		}
		if width := float64(hi - lo + 1); width > 1 && width/float64(lo) > 1.0/subCount {
			t.Fatalf("bucket %d [%d, %d] is %.4f of its value wide, want at most %.4f", i, lo, hi, width/float64(lo), 1.0/subCount)
		}
	}
	// Buckets tile the range without gaps.
	for i := 1; i < numBuckets; i++ {
		_, prevHi := bucketBounds(i - 1)
		lo, _ := bucketBounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, want %d (right after bucket %d)", i, lo, prevHi+1, i-1)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	uniform := make([]time.Duration, 0, 10000)
	for i := 1; i <= 10000; i++ {
		uniform = append(uniform, time.Duration(i)*time.Microsecond)
	}
	tests := []struct {
		name   string
		values []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"single p50", []time.Duration{42 * time.Millisecond}, 0.5, 42 * time.Millisecond},
		{"single p99", []time.Duration{42 * time.Millisecond}, 0.99, 42 * time.Millisecond},
		{"exact small values", []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.5, 5},
		{"negative counts as zero", []time.Duration{-5, 0, 0}, 1, 0},
		{"uniform p50", uniform, 0.50, 5000 * time.Microsecond},
		{"uniform p90", uniform, 0.90, 9000 * time.Microsecond},
		{"uniform p99", uniform, 0.99, 9900 * time.Microsecond},
		{"uniform max", uniform, 1, 10000 * time.Microsecond},
		{"uniform min", uniform, 0, 1 * time.Microsecond},
		{"outlier p99", append(make([]time.Duration, 99), time.Second), 0.99, 0},
		{"outlier p100", append(make([]time.Duration, 99), time.Second), 1, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := new(histogram)
			for _, v := range tt.values {
				h.Record(v)
			}
			got := h.Quantile(tt.q)
			// A bucket is at most 1/64 of its value wide; the upper bound is
			// reported, so got is in [want, want*(1+1/64)].
			if got < tt.want || float64(got) > float64(tt.want)*(1+1.0/subCount) {
				t.Errorf("Quantile(%v) = %v, want %v (+%.1f%%)", tt.q, got, tt.want, 100.0/subCount)
			}
		})
	}
}

func TestHistogramSummary(t *testing.T) {
	h := new(histogram)
	for _, v := range []time.Duration{100 * time.Microsecond, 200 * time.Microsecond, 300 * time.Microsecond} {
		h.Record(v)
	}
	s := h.Summary()
	if s.Count != 3 {
		t.Errorf("Count = %d, want 3", s.Count)
	}
	if s.MinUS != 100 || s.MaxUS != 300 || s.MeanUS != 200 {
		t.Errorf("min/mean/max = %v/%v/%v µs, want 100/200/300", s.MinUS, s.MeanUS, s.MaxUS)
	}
	if s.P50US < 200 || s.P50US > 204 {
		t.Errorf("P50 = %v µs, want 200..204", s.P50US)
	}
	if got := new(histogram).Summary(); got != (latencySummary{}) {
		t.Errorf("empty Summary() = %+v, want zero", got)
	}
}

func TestHistogramConcurrent(t *testing.T) {
	h := new(histogram)
	const goroutines, each = 8, 1000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				h.Record(time.Duration(g*each+i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	if got, want := h.Count(), uint64(goroutines*each); got != want {
		t.Errorf("Count() = %d, want %d", got, want)
	}
	if got, want := h.Quantile(1), time.Duration(goroutines*each-1)*time.Microsecond; got != want {
		t.Errorf("max = %v, want %v", got, want)
	}
	if got := h.Summary().MinUS; got != 0 {
		t.Errorf("min = %v µs, want 0", got)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	b.ReportAllocs()
	h := new(histogram)
	b.RunParallel(func(pb *testing.PB) {
		v := time.Duration(1234567)
		for pb.Next() {
			h.Record(v)
			v += 997
		}
	})
}
