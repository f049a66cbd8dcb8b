package main

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPUSelf(t *testing.T) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if _, err := parseStatCPU(b); err != nil {
		t.Fatalf("parseStatCPU(/proc/self/stat) error: %v\n%s", err, b)
	}
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Fatalf("readProc(self): %v", err)
	}
	if s.RSSKiB <= 0 || s.Threads <= 0 || s.HWMKiB < s.RSSKiB {
		t.Errorf("readProc(self) = %+v, want RSS > 0, threads > 0, HWM >= RSS", s)
	}
	if s.CPU < 0 {
		t.Errorf("CPU = %v, want >= 0", s.CPU)
	}
}

func TestParseStatCPU(t *testing.T) {
	// Fields after the command: state ppid pgrp session tty tpgid flags
	// minflt cminflt majflt cmajflt utime stime cutime ...
	tail := " S 1 2 3 0 -1 4194560 100 0 0 0 250 50 7 8 20 0 1 0"
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{"plain", "1234 (snorky)" + tail, 300, false},
		{"name with spaces and parens", "1234 (a) b (c)" + tail, 300, false},
		{"name with digits", "1234 (x 1 2 3)" + tail, 300, false},
		{"no parens", "1234 snorky" + tail, 0, true},
		{"truncated", "1234 (snorky) S 1 2 3", 0, true},
		{"not a number", "1234 (snorky) S 1 2 3 0 -1 4194560 100 0 0 0 x 50 7", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStatCPU(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseStatCPU(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseStatusField(t *testing.T) {
	status := strings.Join([]string{
		"Name:\tsnorky",
		"VmHWM:\t   20480 kB",
		"VmRSS:\t   16384 kB",
		"Threads:\t7",
		"VmRSSX:\tbogus",
	}, "\n") + "\n"
	tests := []struct {
		key     string
		want    int64
		wantErr bool
	}{
		{"VmRSS", 16384, false},
		{"VmHWM", 20480, false},
		{"Threads", 7, false},
		{"VmSwap", 0, true},
		{"Name", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, err := parseStatusField([]byte(status), tt.key)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStatusField(%s) error = %v, want error %v", tt.key, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseStatusField(%s) = %d, want %d", tt.key, got, tt.want)
			}
		})
	}
}

func TestClockTicks(t *testing.T) {
	aux := func(pairs ...uint64) []byte {
		b := make([]byte, 0, 8*len(pairs))
		for _, p := range pairs {
			b = binary.LittleEndian.AppendUint64(b, p)
		}
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want int64
	}{
		{"found", aux(6, 4096, 17, 250, 0, 0), 250},
		{"after AT_NULL", aux(0, 0, 17, 250), 0},
		{"absent", aux(6, 4096), 0},
		{"empty", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseAuxvClkTck(tt.in); got != tt.want {
				t.Errorf("parseAuxvClkTck = %d, want %d", got, tt.want)
			}
		})
	}
	if hz := clockTicks(); hz <= 0 {
		t.Errorf("clockTicks() = %d, want > 0", hz)
	}
	if got := ticksToDuration(250, 100); got != 2500*time.Millisecond {
		t.Errorf("ticksToDuration(250, 100) = %v, want 2.5s", got)
	}
}

func TestParseHostCPU(t *testing.T) {
	tests := []struct {
		name              string
		in                string
		wantBusy, wantTot uint64
		wantErr           bool
	}{
		{"typical", "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n", 161, 1181, false},
		{"no guest fields", "cpu 1 1 1 1 1 1 1 1\n", 6, 8, false},
		{"per-cpu first", "cpu0 1 1 1 1 1 1 1 1\n", 0, 0, true},
		{"short", "cpu 1 2 3\n", 0, 0, true},
		{"garbage", "cpu a b c d e f g h\n", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			busy, total, err := parseHostCPU([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseHostCPU error = %v, want error %v", err, tt.wantErr)
			}
			if busy != tt.wantBusy || total != tt.wantTot {
				t.Errorf("parseHostCPU = %d, %d, want %d, %d", busy, total, tt.wantBusy, tt.wantTot)
			}
		})
	}
	if h, err := readHostCPU(); err != nil || h.Total <= 0 || h.Busy > h.Total {
		t.Errorf("readHostCPU() = %+v, %v, want 0 <= busy <= total, total > 0", h, err)
	}
}
