package config

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"
)

// ClusterConfig joins several snorky serve processes through NATS with
// JetStream (README "Scaling out"); absent: one node.
type ClusterConfig struct {
	// Name names the cluster's subjects ("snorky.<name>.…"), stream and
	// buckets: nodes of one cluster share it; two clusters may share a
	// NATS deployment under different names. Default "snorky".
	Name   string              `koanf:"name"`
	NATS   NATSConfig          `koanf:"nats"`
	Stream ClusterStreamConfig `koanf:"stream"`
	// PresenceTTL is how long a dead node's Chat members, Cursors and
	// Messaging names outlive it on the other nodes. Default 15s.
	PresenceTTL time.Duration `koanf:"presence_ttl"`
}

// NATSConfig is how a node reaches NATS.
type NATSConfig struct {
	// URL is one or more NATS URLs, comma-separated
	// ("nats://a:4222,nats://b:4222"); the client also learns the rest of
	// the NATS cluster from the server.
	URL       string        `koanf:"url"`
	CredsFile string        `koanf:"creds_file"`
	TLS       NATSTLSConfig `koanf:"tls"`
}

// NATSTLSConfig is the client side of TLS to NATS.
type NATSTLSConfig struct {
	CAFile   string `koanf:"ca_file"`
	CertFile string `koanf:"cert_file"`
	KeyFile  string `koanf:"key_file"`
}

// ClusterStreamConfig is the JetStream stream that carries the WAL's
// transactions to every node: it is the replay window of the cluster.
type ClusterStreamConfig struct {
	// Replicas of the stream (1, 3 or 5 in production; at most the number
	// of NATS servers). Default 1.
	Replicas int `koanf:"replicas"`
	// Storage is "file" (default) or "memory".
	Storage string `koanf:"storage"`
	// MaxAge and MaxBytes bound the stream; default database.history.
	MaxAge   time.Duration `koanf:"max_age"`
	MaxBytes ByteSize      `koanf:"max_bytes"`
}

var clusterName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func clusterDefaults() map[string]any {
	return map[string]any{
		"cluster.name":            "snorky",
		"cluster.nats.url":        "nats://127.0.0.1:4222",
		"cluster.stream.replicas": 1,
		"cluster.stream.storage":  "file",
		"cluster.presence_ttl":    "15s",
	}
}

// ValidateCluster checks the cluster section, if present, and fills the
// stream's bounds from database.history.
func (c *Config) ValidateCluster() error {
	cl := c.Cluster
	if cl == nil {
		return nil
	}
	if !clusterName.MatchString(cl.Name) {
		return fmt.Errorf("cluster.name: %q must be 1 to 64 letters, digits, _ or - (it names NATS subjects, a stream and buckets)", cl.Name)
	}
	if cl.NATS.URL == "" {
		return errors.New("cluster.nats.url: must be set, e.g. nats://127.0.0.1:4222 (several: comma-separated)")
	}
	for key, path := range map[string]string{
		"cluster.nats.creds_file":    cl.NATS.CredsFile,
		"cluster.nats.tls.ca_file":   cl.NATS.TLS.CAFile,
		"cluster.nats.tls.cert_file": cl.NATS.TLS.CertFile,
		"cluster.nats.tls.key_file":  cl.NATS.TLS.KeyFile,
	} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	if (cl.NATS.TLS.CertFile == "") != (cl.NATS.TLS.KeyFile == "") {
		return errors.New("cluster.nats.tls: cert_file and key_file go together")
	}
	if cl.Stream.Replicas < 1 || cl.Stream.Replicas > 5 {
		return fmt.Errorf("cluster.stream.replicas: %d is not between 1 and 5", cl.Stream.Replicas)
	}
	switch cl.Stream.Storage {
	case "file", "memory":
	default:
		return fmt.Errorf("cluster.stream.storage: %q is not one of file, memory", cl.Stream.Storage)
	}
	if cl.PresenceTTL < time.Second {
		return fmt.Errorf("cluster.presence_ttl: %v is shorter than 1s", cl.PresenceTTL)
	}
	if cl.Stream.MaxAge < 0 {
		return fmt.Errorf("cluster.stream.max_age: %v is negative", cl.Stream.MaxAge)
	}
	if cl.Stream.MaxBytes < 0 {
		return fmt.Errorf("cluster.stream.max_bytes: %d is negative", cl.Stream.MaxBytes)
	}
	// The default bounds are the replay window's (database.history, or
	// its defaults without a database).
	if cl.Stream.MaxAge == 0 {
		cl.Stream.MaxAge = 2 * time.Minute
		if c.Database != nil {
			cl.Stream.MaxAge = c.Database.History.MaxAge
		}
	}
	if cl.Stream.MaxBytes == 0 {
		cl.Stream.MaxBytes = 64 << 20
		if c.Database != nil {
			cl.Stream.MaxBytes = c.Database.History.MaxBytes
		}
	}
	if cl.Stream.MaxAge < c.Tokens.AcquireTimeout {
		return fmt.Errorf("cluster.stream.max_age: %v is shorter than tokens.acquire_timeout (%v): a node that joins must be able to serve every token still valid", cl.Stream.MaxAge, c.Tokens.AcquireTimeout)
	}
	return nil
}
