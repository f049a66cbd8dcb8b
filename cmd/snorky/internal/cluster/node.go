// Package cluster joins several snorky serve processes ("nodes") into one
// service through NATS: the replication stream of the one node that owns
// the slot reaches every node through a JetStream stream, and the other
// services exchange their traffic over NATS subjects and key-value
// buckets (packages relay and presence).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Node is this process's place in the cluster: what the service bridges
// need to reach the other nodes.
type Node struct {
	// ID names this node, unique among the running nodes (a fresh one per
	// process start).
	ID string
	// Prefix begins every subject and names every stream and bucket of
	// this cluster: "snorky.<cluster.name>" for subjects; bucket and stream
	// names use Name.
	Prefix string
	Name   string
	NC     *nats.Conn
	JS     jetstream.JetStream
	Log    *slog.Logger
	// Replicas is the number of replicas of the cluster's stream and
	// buckets (cluster.stream.replicas); 0 means 1.
	Replicas int
}

// openBucketTimeout bounds OpenBucket.
const openBucketTimeout = 2 * time.Minute

// OpenBucket binds to the key-value bucket cfg names, creating it when
// absent, with n.Replicas replicas unless cfg says otherwise. Nodes start
// together: binding first avoids concurrent creates of a replicated
// bucket, which can stall, and NATS can take a while to settle; it retries
// for up to openBucketTimeout. The first node's configuration stands.
func (n *Node) OpenBucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	ctx, cancel := context.WithTimeout(ctx, openBucketTimeout)
	defer cancel()
	if cfg.Replicas == 0 {
		cfg.Replicas = max(n.Replicas, 1)
	}
	for {
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := n.JS.KeyValue(bctx, cfg.Bucket)
		cancel()
		if err == nil {
			return kv, nil
		}
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			bctx, cancel = context.WithTimeout(ctx, 5*time.Second)
			kv, err = n.JS.CreateKeyValue(bctx, cfg)
			cancel()
			if err == nil {
				return kv, nil
			}
		}
		// Another node created it meanwhile (or is creating it, and
		// JetStream's answers are slow while it does): look again.
		if !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bucket %s: %w (last: %w)", cfg.Bucket, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
