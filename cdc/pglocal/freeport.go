package pglocal

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// handedOut holds every port FreePort returned in this process, so that it
// never returns one twice: a port handed out is free until its user binds
// it, and a second caller in that gap would get it too.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort returns a port of 127.0.0.1 that was free a moment ago and that
// no earlier call in this process returned.
//
// It picks below the kernel's ephemeral range when it can (from 15000 up to
// the range's start), where neither a bind to port 0 by another process nor
// the local end of an outgoing connection lands, so the port stays free
// until the caller's server binds it. Without room there it asks the kernel
// for one.
func FreePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = make(map[int]bool)
	}
	const lowest = 15000
	if start := ephemeralStart(); start-lowest >= 1000 {
		for range 200 {
			p := lowest + rand.IntN(start-lowest)
			if !handedOut.ports[p] && bindable(p) {
				handedOut.ports[p] = true
				return p, nil
			}
		}
	}
	for range 200 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("pglocal: finding a free port: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handedOut.ports[p] {
			handedOut.ports[p] = true
			return p, nil
		}
	}
	return 0, fmt.Errorf("pglocal: no free port of 127.0.0.1 found")
}

func bindable(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// ephemeralStart is the first port of the kernel's ephemeral range (0 when
// it cannot be read).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}
