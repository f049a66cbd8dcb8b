package server

import (
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
