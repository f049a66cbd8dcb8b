package cluster

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the cluster's Prometheus metrics.
type Metrics struct {
	published      prometheus.Counter
	publishRetries prometheus.Counter
	badRecords     prometheus.Counter
	lag            prometheus.Gauge
	owner          prometheus.Gauge
	connected      prometheus.Gauge
}

// NewMetrics registers the cluster metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "snorky_cluster_stream_published_total",
			Help: "Messages (batches of records) this node published to the cluster stream as the slot's owner."}),
		publishRetries: prometheus.NewCounter(prometheus.CounterOpts{Name: "snorky_cluster_stream_publish_retries_total",
			Help: "Publishes to the cluster stream retried after a failure."}),
		badRecords: prometheus.NewCounter(prometheus.CounterOpts{Name: "snorky_cluster_stream_bad_records_total",
			Help: "Records of the cluster stream this node could not read."}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "snorky_cluster_stream_lag_records",
			Help: "Records of the cluster stream not yet given to this node's DataSync engine."}),
		owner: prometheus.NewGauge(prometheus.GaugeOpts{Name: "snorky_cluster_owner",
			Help: "1 while this node owns the replication slot and publishes the stream."}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "snorky_cluster_nats_connected",
			Help: "1 while this node is connected to NATS."}),
	}
	if reg != nil {
		reg.MustRegister(m.published, m.publishRetries, m.badRecords, m.lag, m.owner, m.connected)
	}
	return m
}
