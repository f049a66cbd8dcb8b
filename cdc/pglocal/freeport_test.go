package pglocal

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortNeverRepeats holds none of the ports it gets, as a test
// harness does between choosing a port and starting the server on it, and
// checks that no port comes back twice and that each can be bound.
func TestFreePortNeverRepeats(t *testing.T) {
	seen := make(map[int]bool)
	for range 500 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
	start := ephemeralStart()
	for p := range seen {
		if start-15000 >= 1000 && (p < 15000 || p >= start) {
			t.Errorf("port %d outside [15000, %d), where outgoing connections do not land", p, start)
		}
	}
	// Any of them can still be bound.
	var one int
	for p := range seen {
		one = p
		break
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(one)))
	if err != nil {
		t.Fatalf("binding a port FreePort returned: %v", err)
	}
	l.Close()
}
