package server

import (
	"context"
	"time"

	"github.com/snorkyhq/snorky/cdc"
)

// startCluster sets up the stream and buckets (in the background: NATS may
// not be reachable yet), then feeds the engine from the stream until ctx is
// done, closing feedDone at the end; it also starts the bridges of the
// other services. The returned function stops the bridges.
func (s *Server) startCluster(ctx context.Context, feedDone chan struct{}) (func(), error) {
	stop, err := s.cluster.OnTakeover(s.datasync.Release)
	if err != nil {
		return nil, err
	}
	s.bridges = append(s.bridges, stop)
	go func() {
		defer close(feedDone)
		if err := s.cluster.Ensure(ctx); err != nil {
			return
		}
		s.feed.Run(ctx)
	}()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			s.cluster.SetOwner(s.reader.State() == cdc.StateStreaming)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		for _, stop := range s.bridges {
			stop()
		}
	}, nil
}

// closeCluster closes the NATS connection, if any.
func (s *Server) closeCluster() {
	if s.cluster != nil {
		s.cluster.Close()
	}
}
