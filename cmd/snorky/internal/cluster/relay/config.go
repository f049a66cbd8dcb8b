package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
)

// Config tunes the bridges; a zero field takes its default.
type Config struct {
	// NameTTL is how long a Messaging name outlives its node's last
	// refresh: a dead node's names are free after at most this. Default
	// 15 s.
	NameTTL time.Duration
	// NameRefresh is how often a node rewrites its names; below NameTTL.
	// Default NameTTL/3.
	NameRefresh time.Duration
	// Timeout bounds one round trip to the cluster: a name claim, a
	// message to another node, the gathering of disconnectIdentity's
	// counts. Default 2 s.
	Timeout time.Duration
	// GatherQuiet is how long disconnectIdentity waits for more counts
	// after the last one came. Default 250 ms.
	GatherQuiet time.Duration
	// Replicas is the number of replicas of the names bucket, at most the
	// number of NATS servers. Default 1.
	Replicas int
	// QueueLen is how many PubSub messages may wait to be published, and
	// how many received ones may wait to be delivered; beyond, they are
	// dropped, counted and logged. Default 16384.
	QueueLen int
}

// Validate reports negative fields and a refresh not below the TTL.
// Errors name the field.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"NameTTL", c.NameTTL}, {"NameRefresh", c.NameRefresh}, {"Timeout", c.Timeout}, {"GatherQuiet", c.GatherQuiet}} {
		if f.v < 0 {
			return fmt.Errorf("relay.%s: must not be negative (got %s)", f.name, f.v)
		}
	}
	if c.Replicas < 0 {
		return fmt.Errorf("relay.Replicas: must not be negative (got %d)", c.Replicas)
	}
	if c.QueueLen < 0 {
		return fmt.Errorf("relay.QueueLen: must not be negative (got %d)", c.QueueLen)
	}
	if d := c.withDefaults(); d.NameRefresh >= d.NameTTL {
		return fmt.Errorf("relay.NameRefresh: must be below NameTTL %s (got %s)", d.NameTTL, d.NameRefresh)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.NameTTL == 0 {
		c.NameTTL = 15 * time.Second
	}
	if c.NameRefresh == 0 {
		c.NameRefresh = c.NameTTL / 3
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.GatherQuiet == 0 {
		c.GatherQuiet = 250 * time.Millisecond
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.QueueLen == 0 {
		c.QueueLen = 16384
	}
	return c
}

// nodeHeader carries the publishing node's ID on PubSub and identity
// messages, so that a node knows its own.
const nodeHeader = "Snorky-Node"

var bucketName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// check validates cfg and what the bridges need of n: a connection, a
// prefix, an ID that is one subject token.
func check(n *cluster.Node, cfg Config) (Config, error) {
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	switch {
	case n == nil || n.NC == nil:
		return cfg, errors.New("relay: no NATS connection")
	case n.Prefix == "" || strings.ContainsAny(n.Prefix, "*> \t\r\n") || strings.HasPrefix(n.Prefix, ".") || strings.HasSuffix(n.Prefix, "."):
		return cfg, fmt.Errorf("relay: invalid subject prefix %q", n.Prefix)
	case n.ID == "" || strings.ContainsAny(n.ID, ".*> \t\r\n"):
		return cfg, fmt.Errorf("relay: node ID %q is not one subject token", n.ID)
	}
	return cfg.withDefaults(), nil
}

func logger(n *cluster.Node, service string) *slog.Logger {
	l := n.Log
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("component", "relay", "service", service)
}

// drops counts what a bridge had to drop and logs it, at most once per
// interval, with the total so far.
type drops struct {
	log  *slog.Logger
	msg  string
	n    atomic.Uint64
	last atomic.Int64 // UnixNano of the last log line
}

const dropLogInterval = 10 * time.Second

func (d *drops) add(err error) {
	n := d.n.Add(1)
	now := time.Now().UnixNano()
	last := d.last.Load()
	if now-last < int64(dropLogInterval) && last != 0 {
		return
	}
	if d.last.CompareAndSwap(last, now) {
		d.log.Warn(d.msg, "dropped", n, "err", err)
	}
}
