package main

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/cmd/snorky/natslocal"
)

// TestCheckCluster: `snorky check` reaches NATS and JetStream for a
// cluster section, and says what to fix when it cannot.
func TestCheckCluster(t *testing.T) {
	ns, err := natslocal.Start(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "nats://" + dead.Addr().String()
	dead.Close()
	for _, tc := range []struct {
		name, url, want string
		ok              bool
	}{
		{"reachable", ns.URL(0), "ok: NATS at " + ns.URL(0) + " answers, with JetStream", true},
		{"unreachable", deadURL, "problem: cluster.nats.url: cannot connect to NATS at " + deadURL, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "snorky.yaml")
			writeFile(t, path, fmt.Sprintf("backend: {api_key: %q}\ntokens: {secret: %q}\ncluster: {nats: {url: %q}}\n", testKey, testSecret, tc.url))
			var out bytes.Buffer
			err := check(t.Context(), path, nil, &out)
			if (err == nil) != tc.ok || !strings.Contains(out.String(), tc.want) {
				t.Fatalf("check: error %v, output:\n%s\nwant ok=%v and %q", err, out.String(), tc.ok, tc.want)
			}
			if !tc.ok && !strings.Contains(out.String(), "fix: start NATS with JetStream") {
				t.Errorf("no fix in:\n%s", out.String())
			}
		})
	}
}
