// Package natslocal starts throwaway NATS servers with JetStream, embedded
// in this process (tests, `snorky demo --nodes`, snorky-bench): one server, or
// a cluster of several that route to each other and replicate streams,
// each with its own storage directory.
package natslocal

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/snorkyhq/snorky/cdc/pglocal"
)

// Cluster is a set of embedded NATS servers.
type Cluster struct {
	Servers []*server.Server
	opts    []*server.Options
}

// Start starts n NATS servers with JetStream, storing under dir (a
// directory per server). With n > 1 they form one cluster named "snorky"
// whose streams may have up to n replicas. Start waits until every server
// accepts clients and, for a cluster, until JetStream has a meta leader.
func Start(dir string, n int) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("natslocal: %d servers", n)
	}
	routePorts := make([]int, n)
	for i := range routePorts {
		p, err := pglocal.FreePort()
		if err != nil {
			return nil, err
		}
		routePorts[i] = p
	}
	c := &Cluster{}
	for i := 0; i < n; i++ {
		o := &server.Options{
			ServerName:             fmt.Sprintf("nats-%d", i+1),
			Host:                   "127.0.0.1",
			Port:                   server.RANDOM_PORT,
			JetStream:              true,
			StoreDir:               filepath.Join(dir, fmt.Sprintf("nats-%d", i+1)),
			NoSigs:                 true,
			NoLog:                  true,
			DisableJetStreamBanner: true,
			MaxPayload:             8 << 20,
		}
		if n > 1 {
			o.Cluster = server.ClusterOpts{Name: "snorky", Host: "127.0.0.1", Port: routePorts[i]}
			for j, p := range routePorts {
				if j != i {
					o.Routes = append(o.Routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
				}
			}
		}
		if err := os.MkdirAll(o.StoreDir, 0o755); err != nil {
			c.Shutdown()
			return nil, err
		}
		s, err := server.NewServer(o)
		if err != nil {
			c.Shutdown()
			return nil, fmt.Errorf("natslocal: %w", err)
		}
		go s.Start()
		c.Servers = append(c.Servers, s)
		c.opts = append(c.opts, o)
	}
	for _, s := range c.Servers {
		if !s.ReadyForConnections(20 * time.Second) {
			c.Shutdown()
			return nil, fmt.Errorf("natslocal: %s did not start", s.Name())
		}
	}
	if n > 1 {
		if err := c.waitPlacement(n); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	return c, nil
}

// waitPlacement waits until the cluster can place a stream on n servers:
// a meta leader alone is not enough, its peers must have reported in.
func (c *Cluster) waitPlacement(n int) error {
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		return fmt.Errorf("natslocal: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("natslocal: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "natslocal_probe", Subjects: []string{"natslocal.probe"}, Replicas: n, Storage: jetstream.MemoryStorage})
		if err == nil {
			err = js.DeleteStream(ctx, "natslocal_probe")
		}
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natslocal: the cluster cannot place a stream on %d servers after 30 s: %w", n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// URL is the client URL of server i.
func (c *Cluster) URL(i int) string { return c.Servers[i].ClientURL() }

// URLs is every running server's client URL, comma-separated (what
// cluster.nats.url takes).
func (c *Cluster) URLs() string {
	var us []string
	for _, s := range c.Servers {
		if s.Running() {
			us = append(us, s.ClientURL())
		}
	}
	return strings.Join(us, ",")
}

// Kill stops server i at once, as a crash would (its storage stays).
func (c *Cluster) Kill(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
}

// Shutdown stops every server.
func (c *Cluster) Shutdown() {
	for _, s := range c.Servers {
		s.Shutdown()
	}
	for _, s := range c.Servers {
		s.WaitForShutdown()
	}
}
