package server

import (
	"math"
	"testing"
	"time"
)

// TestZeroDisables: the file's 0 (off) must reach wsapi as a negative
// value, since wsapi reads 0 as its own default.
func TestZeroDisables(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{0: -1, -time.Second: -time.Second, 25 * time.Second: 25 * time.Second} {
		if got := zeroDisables(in); got != want {
			t.Errorf("zeroDisables(%v) = %v, want %v", in, got, want)
		}
	}
}

// TestNoCap: the file's 0 for a count or size limit is no cap, whatever the
// package reads 0 as.
func TestNoCap(t *testing.T) {
	for in, want := range map[int]int{0: math.MaxInt, 1: 1, 256: 256} {
		if got := noCap(in); got != want {
			t.Errorf("noCap(%d) = %d, want %d", in, got, want)
		}
	}
}
