// Package cluster joins several snorky serve processes ("nodes") into one
// service through NATS: the replication stream of the one node that owns
// the slot reaches every node through a JetStream stream, and the other
// services exchange their traffic over NATS subjects and key-value
// buckets (packages relay and presence).
package cluster

import (
	"log/slog"

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
}
