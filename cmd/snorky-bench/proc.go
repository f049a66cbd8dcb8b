package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// procSample is one reading of a process's resource use from /proc.
type procSample struct {
	// CPU is user plus system time consumed so far (utime+stime).
	CPU time.Duration
	// RSSKiB is the resident set size (VmRSS), in KiB.
	RSSKiB int64
	// HWMKiB is the peak resident set size (VmHWM), in KiB.
	HWMKiB int64
	// Threads is the number of OS threads.
	Threads int64
}

// readProc samples /proc/PID/stat and /proc/PID/status.
func readProc(pid int) (procSample, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	if pid == 0 {
		dir = "/proc/self"
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return procSample{}, fmt.Errorf("reading process stat: %w", err)
	}
	ticks, err := parseStatCPU(stat)
	if err != nil {
		return procSample{}, fmt.Errorf("parsing %s/stat: %w", dir, err)
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return procSample{}, fmt.Errorf("reading process status: %w", err)
	}
	var s procSample
	s.CPU = ticksToDuration(ticks, clockTicks())
	if s.RSSKiB, err = parseStatusField(status, "VmRSS"); err != nil {
		return procSample{}, fmt.Errorf("parsing %s/status: %w", dir, err)
	}
	// VmHWM and Threads are informative; a kernel without them is no error.
	s.HWMKiB, _ = parseStatusField(status, "VmHWM")
	s.Threads, _ = parseStatusField(status, "Threads")
	return s, nil
}

// parseStatCPU returns utime+stime, in clock ticks, from the contents of
// /proc/PID/stat. The command name (field 2) is in parentheses and may itself
// hold spaces and parentheses, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (uint64, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, errors.New("no ')' after the command name")
	}
	// After ") " come fields 3 (state), 4, ...; utime is field 14, stime 15.
	fields := bytes.Fields(b[end+1:])
	const utimeIdx, stimeIdx = 14 - 3, 15 - 3
	if len(fields) <= stimeIdx {
		return 0, fmt.Errorf("got %d fields after the command name, want at least %d", len(fields), stimeIdx+1)
	}
	utime, err := strconv.ParseUint(string(fields[utimeIdx]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseUint(string(fields[stimeIdx]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return utime + stime, nil
}

// parseStatusField returns the number after "key:" in /proc/PID/status
// contents (VmRSS and friends are in kB, which the kernel means as KiB).
func parseStatusField(b []byte, key string) (int64, error) {
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte(key+":"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			return 0, fmt.Errorf("%s: no value", key)
		}
		v, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", key, err)
		}
		return v, nil
	}
	return 0, fmt.Errorf("%s: not found", key)
}

func ticksToDuration(ticks uint64, hz int64) time.Duration {
	return time.Duration(ticks) * time.Second / time.Duration(hz)
}

// clockTicks returns the kernel's USER_HZ (sysconf(_SC_CLK_TCK)), read from
// the AT_CLKTCK entry of the auxiliary vector; 100 when it cannot be read.
var clockTicks = sync.OnceValue(func() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	if hz := parseAuxvClkTck(b); hz > 0 {
		return hz
	}
	return 100
})

// parseAuxvClkTck finds AT_CLKTCK in a 64-bit little-endian auxiliary vector.
func parseAuxvClkTck(b []byte) int64 {
	const atNull, atClkTck = 0, 17
	for len(b) >= 16 {
		k, v := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
		b = b[16:]
		switch k {
		case atNull:
			return 0
		case atClkTck:
			return int64(v)
		}
	}
	return 0
}

// countFDs returns how many file descriptors the process holds open.
func countFDs(pid int) (int, error) {
	d, err := os.Open("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	return len(names), nil
}

// hostCPU is the machine's CPU time so far, summed over all CPUs, from the
// first line of /proc/stat. Comparing it with the server's and the runner's
// own CPU time shows how much other processes took during a run.
type hostCPU struct {
	Busy  time.Duration // all but idle and iowait
	Total time.Duration
}

func readHostCPU() (hostCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return hostCPU{}, fmt.Errorf("reading /proc/stat: %w", err)
	}
	busy, total, err := parseHostCPU(b)
	if err != nil {
		return hostCPU{}, fmt.Errorf("parsing /proc/stat: %w", err)
	}
	hz := clockTicks()
	return hostCPU{Busy: ticksToDuration(busy, hz), Total: ticksToDuration(total, hz)}, nil
}

// parseHostCPU reads the "cpu" line: user nice system idle iowait irq
// softirq steal (guest time is already part of user).
func parseHostCPU(b []byte) (busy, total uint64, err error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return 0, 0, fmt.Errorf("first line %q is not an aggregate cpu line with 8 counters", line)
	}
	var v [8]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(string(f[i+1]), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("cpu field %d: %w", i+1, err)
		}
		total += v[i]
	}
	const idle, iowait = 3, 4
	return total - v[idle] - v[iowait], total, nil
}

// runUsage is one reading of what a run measures around itself: the server's
// process, this process (the load generator) and the whole machine.
type runUsage struct {
	server procSample
	self   procSample
	host   hostCPU
}

func sampleUsage(srv *server) (runUsage, error) {
	s, err := srv.Sample()
	if err != nil {
		return runUsage{}, err
	}
	self, _ := readProc(0)
	host, _ := readHostCPU()
	return runUsage{server: s, self: self, host: host}, nil
}

// cpuSpent is the CPU time taken between two readings.
type cpuSpent struct {
	Server  time.Duration // by the server
	ClientS float64       // by the load generator, in seconds
	HostPct float64       // the machine's busy share, percent
	OtherS  float64       // by every other process, in seconds
}

func (u runUsage) until(later runUsage) cpuSpent {
	c := cpuSpent{Server: later.server.CPU - u.server.CPU, ClientS: (later.self.CPU - u.self.CPU).Seconds()}
	if dt := later.host.Total - u.host.Total; dt > 0 {
		busy := later.host.Busy - u.host.Busy
		c.HostPct = 100 * busy.Seconds() / dt.Seconds()
		c.OtherS = max(0, busy.Seconds()-c.Server.Seconds()-c.ClientS)
	}
	return c
}
