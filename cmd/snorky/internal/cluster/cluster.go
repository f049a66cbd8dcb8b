package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
	"github.com/snorkyhq/snorky/sync/datasync"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Cluster is this node's connection to the others: the NATS connection,
// the replication stream and the bucket of acquired subscriptions.
type Cluster struct {
	Node
	cfg      *config.ClusterConfig
	stream   string // the JetStream stream of the WAL
	subject  string
	claimTTL time.Duration
	metrics  *Metrics
	claims   jetstream.KeyValue
}

// ErrUnavailable answers a request that needs the cluster while NATS is
// out of reach.
const ErrUnavailable rpc.Error = "Cluster unavailable: retry in a moment"

// Connect connects to NATS. It does not wait for NATS to be reachable: the
// client keeps trying in the background and /readyz says so; Ensure then
// creates or updates the stream and buckets.
func Connect(cfg *config.ClusterConfig, acquireTimeout time.Duration, log *slog.Logger, reg prometheus.Registerer) (*Cluster, error) {
	host, _ := os.Hostname()
	var id [4]byte
	rand.Read(id[:])
	c := &Cluster{
		cfg:      cfg,
		stream:   "snorky_" + cfg.Name + "_wal",
		claimTTL: acquireTimeout + time.Minute,
		metrics:  NewMetrics(reg),
	}
	c.ID = sanitizeToken(host) + "-" + hex.EncodeToString(id[:])
	c.Name, c.Prefix, c.Log, c.Replicas = cfg.Name, "snorky."+cfg.Name, log, cfg.Stream.Replicas
	c.subject = c.Prefix + ".wal"
	opts := []nats.Option{
		nats.Name("snorky " + c.ID),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ConnectHandler(func(*nats.Conn) { c.metrics.connected.Set(1); log.Info("cluster: connected to NATS") }),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.metrics.connected.Set(1)
			log.Info("cluster: reconnected to NATS", "server", nc.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			c.metrics.connected.Set(0)
			if err != nil { // nil: this node closed the connection
				log.Warn("cluster: disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			log.Warn("cluster: NATS error", "subject", subj, "err", err)
		}),
	}
	nc, err := nats.Connect(cfg.NATS.URL, append(opts, authOptions(cfg)...)...)
	if err != nil {
		return nil, fmt.Errorf("cluster.nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster.nats: %w", err)
	}
	c.NC, c.JS = nc, js
	return c, nil
}

// authOptions are the credentials and TLS options of cluster.nats.
func authOptions(cfg *config.ClusterConfig) []nats.Option {
	var opts []nats.Option
	if f := cfg.NATS.CredsFile; f != "" {
		opts = append(opts, nats.UserCredentials(f))
	}
	if t := cfg.NATS.TLS; t.CAFile != "" {
		opts = append(opts, nats.RootCAs(t.CAFile))
	}
	if t := cfg.NATS.TLS; t.CertFile != "" {
		opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
	}
	return opts
}

// streamEpoch is the epoch of a stream fed without the snorky schema's
// epoch (or without a database): the stream's identity, shared by every
// node.
func streamEpoch(s jetstream.Stream) string {
	return "js" + strconv.FormatInt(s.CachedInfo().Created.UnixNano(), 36)
}

// sanitizeToken keeps what a NATS subject token may hold.
func sanitizeToken(s string) string {
	s = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
	if s == "" {
		s = "node"
	}
	return s
}

// Ensure creates or updates the stream and the claims bucket, retrying
// until NATS answers or ctx is done.
func (c *Cluster) Ensure(ctx context.Context) error {
	wait := 200 * time.Millisecond
	logged := false
	for {
		err := c.ensure(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !logged {
			c.Log.Warn("cluster: setting up the stream and buckets failed; retrying", "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

func (c *Cluster) ensure(ctx context.Context) error {
	storage := jetstream.FileStorage
	if c.cfg.Stream.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	want := jetstream.StreamConfig{
		Name:        c.stream,
		Description: "snorky: the WAL's transactions, published by the node that owns the replication slot",
		Subjects:    []string{c.subject},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.cfg.Stream.MaxAge,
		MaxBytes:    int64(c.cfg.Stream.MaxBytes),
		Duplicates:  min(2*time.Minute, c.cfg.Stream.MaxAge),
		Replicas:    c.cfg.Stream.Replicas,
		Storage:     storage,
	}
	// Nodes start together: each first looks for what another may have
	// created (two concurrent creates of a replicated stream can stall).
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	s, err := c.JS.Stream(sctx, c.stream)
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = c.JS.CreateStream(sctx, want)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("stream %s: %w", c.stream, err)
		}
	case err != nil:
		return fmt.Errorf("stream %s: %w", c.stream, err)
	default:
		have := s.CachedInfo().Config
		if have.MaxAge != want.MaxAge || have.MaxBytes != want.MaxBytes || have.Replicas != want.Replicas || have.Duplicates != want.Duplicates {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = c.JS.UpdateStream(sctx, want)
			cancel()
			if err != nil {
				return fmt.Errorf("stream %s: updating it to this node's configuration: %w", c.stream, err)
			}
			c.Log.Info("cluster: updated the stream's limits", "max_age", want.MaxAge, "max_bytes", want.MaxBytes, "replicas", want.Replicas)
		}
	}
	kv, err := c.OpenBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      "snorky_" + c.Name + "_claims",
		Description: "snorky: subscription tokens acquired (single use across nodes)",
		TTL:         c.claimTTL,
		Replicas:    c.cfg.Stream.Replicas,
		Storage:     storage,
	})
	if err != nil {
		return fmt.Errorf("claims bucket: %w", err)
	}
	c.claims = kv
	return nil
}

// MaxPayload is the largest message NATS takes (known once connected).
func (c *Cluster) MaxPayload() int {
	if n := c.NC.MaxPayload(); n > 0 {
		return int(n)
	}
	return 1 << 20
}

// Publisher returns the sink of this node's WAL reader.
func (c *Cluster) Publisher(ctx context.Context) *Publisher {
	return NewPublisher(ctx, c.JS, c.stream, c.subject, c.MaxPayload(), c.MarkEvery(), c.Log, c.metrics)
}

// MarkEvery is how often a quiet stream gets a marker: well within its
// max_age, so that it always holds one.
func (c *Cluster) MarkEvery() time.Duration {
	return max(c.cfg.Stream.MaxAge/4, time.Second)
}

// Feed returns the consumer of the stream that feeds target.
func (c *Cluster) Feed(target Target, horizon func(context.Context) (string, error)) *Feed {
	return NewFeed(c.JS, c.stream, c.subject, target, horizon, c.Log, c.metrics)
}

// SetOwner records whether this node owns the slot (for /metrics).
func (c *Cluster) SetOwner(owner bool) {
	v := 0.0
	if owner {
		v = 1
	}
	c.metrics.owner.Set(v)
}

// Claim records an acquire across the cluster (datasync.Config.Claim). The
// claims bucket's revisions order every binding of every node.
func (c *Cluster) Claim(id string) (uint64, error) {
	if c.claims == nil || !c.NC.IsConnected() {
		return 0, ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rev, err := c.claims.Create(ctx, id, []byte(c.ID))
	switch {
	case err == nil:
		return rev, nil
	case errors.Is(err, jetstream.ErrKeyExists):
		// This node's own claim, whose answer was lost, is this node's to
		// judge (the engine refuses a subscription already bound).
		if e, gerr := c.claims.Get(ctx, id); gerr == nil && string(e.Value()) == c.ID {
			return e.Revision(), nil
		}
		return 0, datasync.ErrAlreadyAcquired
	default:
		c.Log.Warn("cluster: recording an acquire failed", "err", err)
		return 0, ErrUnavailable
	}
}

// Rebind records that a resume binds subscription id on this node
// (datasync.Config.Rebind), in the claims bucket, whose revision orders it
// after every binding made before it on any node. It writes its own key
// ("bound." + id), never the claim's, which stays the acquire's: a token
// is single-use whichever node the subscription moved to. It waits at most
// rebindTimeout: a resume without it is still served, unordered.
func (c *Cluster) Rebind(id string) (uint64, error) {
	if c.claims == nil || !c.NC.IsConnected() {
		return 0, ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(context.Background(), rebindTimeout)
	defer cancel()
	rev, err := c.claims.Put(ctx, "bound."+id, []byte(c.ID))
	if err != nil {
		c.Log.Warn("cluster: recording a resume failed", "err", err)
		return 0, ErrUnavailable
	}
	return rev, nil
}

// rebindTimeout bounds the recording of a resume.
const rebindTimeout = 2 * time.Second

// takeoverSubject carries the subscription ids a resume took over.
func (c *Cluster) takeoverSubject() string { return c.Prefix + ".takeover" }

const (
	nodeHeader = "Snorky-Node"
	revHeader  = "Snorky-Rev" // the revision of the resume's binding (Rebind)
)

// Resumed tells the other nodes that a resume took subscription id over
// here (datasync.Config.Resumed).
func (c *Cluster) Resumed(id string, rev uint64) {
	m := &nats.Msg{Subject: c.takeoverSubject(), Data: []byte(id), Header: nats.Header{}}
	m.Header.Set(nodeHeader, c.ID)
	m.Header.Set(revHeader, strconv.FormatUint(rev, 10))
	if err := c.NC.PublishMsg(m); err != nil {
		c.Log.Warn("cluster: announcing a resume failed", "err", err)
	}
}

// OnTakeover calls release for every subscription a resume on another node
// took over, until the returned function is called.
func (c *Cluster) OnTakeover(release func(id string, rev uint64)) (stop func(), err error) {
	sub, err := c.NC.Subscribe(c.takeoverSubject(), func(m *nats.Msg) {
		if m.Header.Get(nodeHeader) == c.ID {
			return
		}
		rev, err := strconv.ParseUint(m.Header.Get(revHeader), 10, 64)
		if err != nil {
			return // a node of a version that ordered by clock
		}
		release(string(m.Data), rev)
	})
	if err != nil {
		return nil, err
	}
	return func() { sub.Unsubscribe() }, nil
}

// Health is nil while NATS is connected.
func (c *Cluster) Health() error {
	if !c.NC.IsConnected() {
		return fmt.Errorf("not connected to NATS (%s): %s", c.cfg.NATS.URL, c.NC.Status())
	}
	return nil
}

// Close drains and closes the NATS connection.
func (c *Cluster) Close() {
	if c.NC != nil {
		c.NC.Close()
	}
}

// Check reports what keeps a node from joining the cluster cfg describes,
// as `snorky check` prints problems: NATS out of reach, credentials
// refused, JetStream not enabled.
func Check(ctx context.Context, cfg *config.ClusterConfig) []cdc.Problem {
	opts := []nats.Option{nats.Name("snorky check"), nats.Timeout(5 * time.Second)}
	nc, err := nats.Connect(cfg.NATS.URL, append(opts, authOptions(cfg)...)...)
	if err != nil {
		return []cdc.Problem{{Key: "cluster.nats.url", What: fmt.Sprintf("cannot connect to NATS at %s: %v", cfg.NATS.URL, err),
			Fix: "start NATS with JetStream (nats-server -js), or correct cluster.nats.url (and its credentials or TLS keys)"}}
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err == nil {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = js.AccountInfo(actx)
		cancel()
	}
	if err != nil {
		return []cdc.Problem{{Key: "cluster.nats.url", What: fmt.Sprintf("JetStream is not available on NATS at %s: %v", cfg.NATS.URL, err),
			Fix: "enable JetStream on the NATS servers (nats-server -js, or a jetstream {} block in their configuration)"}}
	}
	return nil
}
