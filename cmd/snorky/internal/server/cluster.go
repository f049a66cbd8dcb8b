package server

import (
	"context"
	"fmt"
	"time"

	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster/presence"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster/relay"
)

// startCluster sets up the stream and buckets, waiting for NATS while ctx
// lasts, and bridges PubSub, Messaging, identity disconnects, Chat and
// Cursors across the nodes; then it feeds the engine from the stream
// until runCtx is done, closing feedDone at the end. The returned function
// stops the bridges.
func (s *Server) startCluster(ctx, runCtx context.Context, feedDone chan struct{}) (func(), error) {
	stopAll := func() {
		for i := len(s.bridges) - 1; i >= 0; i-- {
			s.bridges[i]()
		}
		s.bridges = nil
	}
	s.log.Info("cluster: joining", "node", s.cluster.ID, "nats", s.cfg.Cluster.NATS.URL, "name", s.cfg.Cluster.Name)
	if err := s.cluster.Ensure(ctx); err != nil {
		return nil, err
	}
	if s.direct != nil {
		// Without a database no owner starts the stream: the first node
		// does, so that every node takes the same epoch from it.
		if err := s.direct.Start(runCtx, s.cluster.MarkEvery()); err != nil {
			return nil, fmt.Errorf("cluster: starting the stream: %w", err)
		}
	}
	node := &s.cluster.Node
	ttl := s.cfg.Cluster.PresenceTTL
	rcfg := relay.Config{NameTTL: ttl, Replicas: s.cfg.Cluster.Stream.Replicas}
	for _, b := range []struct {
		what  string
		start func() (func(), error)
	}{
		{"datasync takeovers", func() (func(), error) { return s.cluster.OnTakeover(s.datasync.Release) }},
		{"pubsub", func() (func(), error) { return relay.PubSub(s.svcs.pubsub, node, rcfg) }},
		{"messaging", func() (func(), error) { return relay.Messaging(s.svcs.messaging, node, rcfg) }},
		{"identity", func() (func(), error) { return relay.Identity(s.svcs.identity, node, rcfg) }},
		{"chat", func() (func(), error) { return presence.Chat(s.svcs.chat, node, ttl) }},
		{"cursors", func() (func(), error) { return presence.Cursors(s.svcs.cursors, node, ttl) }},
	} {
		stop, err := b.start()
		if err != nil {
			stopAll()
			return nil, fmt.Errorf("cluster: bridging %s across nodes: %w", b.what, err)
		}
		s.bridges = append(s.bridges, stop)
	}
	go func() {
		defer close(feedDone)
		s.feed.Run(runCtx)
	}()
	if s.reader == nil {
		return stopAll, nil
	}
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			s.cluster.SetOwner(s.reader.State() == cdc.StateStreaming)
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return stopAll, nil
}

// closeCluster closes the NATS connection, if any.
func (s *Server) closeCluster() {
	if s.cluster != nil {
		s.cluster.Close()
	}
}
