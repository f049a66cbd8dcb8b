package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram layout: values (nanoseconds) below 2^subBits are counted exactly;
// above, each power of two is split into 2^subBits equal buckets, so a bucket
// is at most 1/2^subBits (about 1.6%) of its value wide, like HdrHistogram
// with two significant digits.
const (
	subBits    = 6
	subCount   = 1 << subBits
	numBuckets = (64 - subBits) * subCount
)

// histogram records non-negative durations in log-linear buckets. Record is
// safe for concurrent use (atomic counters, no lock); summary reads a
// consistent-enough view once recording has stopped.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // nanoseconds; wraps after ~584 years of total latency
	max    atomic.Int64
	min    atomic.Int64 // valid only when n > 0; 0 means "unset" until first record
}

// bucketOf returns the bucket index of v >= 0.
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	// Shift v so that its top subBits+1 bits remain: [subCount, 2*subCount).
	e := bits.Len64(uint64(v)) - subBits - 1
	return (e+1)*subCount + int(uint64(v)>>e) - subCount
}

// bucketBounds returns the smallest and largest value counted in bucket i.
func bucketBounds(i int) (lo, hi int64) {
	g, sub := i/subCount, i%subCount
	if g == 0 {
		return int64(sub), int64(sub)
	}
	e := g - 1
	lo = int64(subCount+sub) << e
	return lo, lo + (int64(1) << e) - 1
}

// Record adds one observation; negative durations count as zero.
func (h *histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(uint64(v))
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
	for {
		m := h.min.Load()
		// min holds v+1 so that the zero value means unset.
		if (m != 0 && v+1 >= m) || h.min.CompareAndSwap(m, v+1) {
			break
		}
	}
}

// Count returns the number of observations.
func (h *histogram) Count() uint64 { return h.n.Load() }

// Quantile returns the value at quantile q in [0, 1]: the upper bound of the
// bucket holding the ceil(q*n)-th smallest observation, clamped to the
// observed minimum and maximum. It returns 0 when nothing was recorded.
func (h *histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			_, hi := bucketBounds(i)
			hi = min(hi, h.max.Load())
			hi = max(hi, h.min.Load()-1)
			return time.Duration(hi)
		}
	}
	return time.Duration(h.max.Load())
}

// latencySummary is the reported view of a histogram, in microseconds.
type latencySummary struct {
	Count  uint64  `json:"count"`
	MinUS  float64 `json:"min_us"`
	MeanUS float64 `json:"mean_us"`
	P50US  float64 `json:"p50_us"`
	P90US  float64 `json:"p90_us"`
	P99US  float64 `json:"p99_us"`
	P999US float64 `json:"p999_us"`
	MaxUS  float64 `json:"max_us"`
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Summary computes the reported percentiles.
func (h *histogram) Summary() latencySummary {
	n := h.n.Load()
	if n == 0 {
		return latencySummary{}
	}
	return latencySummary{
		Count:  n,
		MinUS:  micros(time.Duration(h.min.Load() - 1)),
		MeanUS: micros(time.Duration(h.sum.Load() / n)),
		P50US:  micros(h.Quantile(0.50)),
		P90US:  micros(h.Quantile(0.90)),
		P99US:  micros(h.Quantile(0.99)),
		P999US: micros(h.Quantile(0.999)),
		MaxUS:  micros(time.Duration(h.max.Load())),
	}
}
