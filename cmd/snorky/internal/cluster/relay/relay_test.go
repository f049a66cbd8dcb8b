package relay

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
	"github.com/snorkyhq/snorky/cmd/snorky/natslocal"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// nats2 is a routed cluster of two NATS servers that every test shares;
// each test is a cluster of its own (name and prefix).
var nats2 *natslocal.Cluster

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relay-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	nats2, err = natslocal.Start(dir, 2)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	nats2.Shutdown()
	os.RemoveAll(dir)
	os.Exit(code)
}

var seq atomic.Int64

// clusterName returns a cluster name of its own for the test.
func clusterName(t *testing.T) string {
	return regexp.MustCompile(`[^A-Za-z0-9]`).ReplaceAllString(t.Name(), "") + fmt.Sprint(seq.Add(1))
}

// newNode connects a node named id of the cluster name to NATS server i.
func newNode(t *testing.T, name string, i int, id string) *cluster.Node {
	t.Helper()
	nc, err := nats.Connect(nats2.URL(i), nats.Name(id))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster.Node{ID: id, Prefix: "snorky." + name, Name: name, NC: nc, JS: js, Log: slog.New(slog.DiscardHandler)}
}

// eventually polls cond every 10 ms until it holds, for at most d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// collector accumulates the frames queued on a fake connection.
type collector struct {
	c      *rpctest.Conn
	frames [][]byte
}

func (col *collector) take() [][]byte {
	col.frames = append(col.frames, col.c.Take()...)
	return col.frames
}

// waitFrames waits until col holds n frames and returns them.
func (col *collector) waitFrames(t *testing.T, n int) [][]byte {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("want %d frames", n), func() bool { return len(col.take()) >= n })
	return col.frames
}

// interest returns how many subscriptions server i knows for subject,
// local and routed.
func interest(i int, subject string) int {
	acc, err := nats2.Servers[i].LookupAccount(server.DEFAULT_GLOBAL_ACCOUNT)
	if err != nil {
		return -1
	}
	return acc.Interest(subject)
}

// messageText returns the "message" of a pubsub notification frame.
func messageText(t *testing.T, frame []byte) (channel, message string) {
	t.Helper()
	var env struct {
		Message struct {
			Type    string
			Channel json.RawMessage
			Message json.RawMessage
		}
	}
	if err := json.Unmarshal(frame, &env); err != nil || env.Message.Type != "message" {
		t.Fatalf("frame %s: not a message notification (%v)", frame, err)
	}
	return string(env.Message.Channel), string(env.Message.Message)
}

func TestFrame(t *testing.T) {
	for _, tc := range []struct{ a, b string }{{"", ""}, {`"x"`, `{"n":1}`}, {strings.Repeat("a", 300), "tail"}} {
		a, b, err := splitFrame(appendFrame(nil, []byte(tc.a), []byte(tc.b)))
		if err != nil || string(a) != tc.a || string(b) != tc.b {
			t.Errorf("frame(%q, %q): got %q, %q, %v", tc.a, tc.b, a, b, err)
		}
	}
	for _, bad := range [][]byte{nil, {0x80}, {5, 'a'}} {
		if _, _, err := splitFrame(bad); err == nil {
			t.Errorf("splitFrame(%q): got no error", bad)
		}
	}
}

func TestChannelToken(t *testing.T) {
	valid := regexp.MustCompile(`^[A-Za-z0-9_~-]+$`)
	long := `"` + strings.Repeat("x", 500) + `"`
	for _, key := range []string{`"news"`, `{"room":1}`, `"a.b *>"`, `""`, long} {
		tok := channelToken(key)
		if !valid.MatchString(tok) || len(tok) > 260 {
			t.Errorf("channelToken(%.20s…): got %q, want one short subject token", key, tok)
		}
	}
	if channelToken(`"a"`) == channelToken(`"b"`) || channelToken(long) == channelToken(long+" ") {
		t.Error("distinct keys share a token")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, ""},
		{Config{NameTTL: time.Second, NameRefresh: 200 * time.Millisecond}, ""},
		{Config{NameTTL: time.Second, NameRefresh: time.Second}, "relay.NameRefresh"},
		{Config{Timeout: -1}, "relay.Timeout"},
		{Config{QueueLen: -1}, "relay.QueueLen"},
	} {
		err := tc.cfg.Validate()
		if got := fmt.Sprint(err); (tc.want == "") != (err == nil) || !strings.Contains(got, tc.want) {
			t.Errorf("%+v.Validate(): got %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// waitKnown waits until both servers know a subscription to each subject:
// a node's subscription reaches the other server through the route a
// little after it is made.
func waitKnown(t *testing.T, subjects ...string) {
	t.Helper()
	for _, s := range subjects {
		eventually(t, 5*time.Second, "both servers know a subscriber of "+s, func() bool {
			return interest(0, s) > 0 && interest(1, s) > 0
		})
	}
}
