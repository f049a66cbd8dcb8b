package cdc

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the reader's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	receivedLSN  prometheus.Gauge
	confirmedLSN prometheus.Gauge
	lagBytes     prometheus.Gauge
	retainedWAL  prometheus.Gauge
	connected    prometheus.Gauge
	transactions prometheus.Counter
	changes      prometheus.Counter
	reconnects   prometheus.Counter
	handoffWait  prometheus.Counter
	heartbeats   prometheus.Counter
}

// NewMetrics creates the reader's metrics and registers them on reg (when
// not nil). Names start with snorky_cdc_.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "snorky", Subsystem: "cdc", Name: name, Help: help})
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "snorky", Subsystem: "cdc", Name: name, Help: help})
	}
	m := &Metrics{
		receivedLSN:  g("received_lsn", "Highest WAL position received from PostgreSQL."),
		confirmedLSN: g("confirmed_lsn", "WAL position last confirmed to PostgreSQL (flush position of the standby status)."),
		lagBytes:     g("lag_bytes", "Bytes between the server's WAL end and the confirmed position."),
		retainedWAL:  g("retained_wal_bytes", "WAL retained by the slot: pg_current_wal_lsn() - restart_lsn (polled)."),
		connected:    g("streaming", "1 while the replication connection is streaming."),
		transactions: c("transactions_total", "Transactions handed to the sink."),
		changes:      c("changes_total", "Row changes handed to the sink."),
		reconnects:   c("reconnects_total", "Replication sessions that ended with an error and were retried."),
		handoffWait:  c("handoff_wait_seconds_total", "Time the reader waited for the sink to take a transaction."),
		heartbeats:   c("heartbeats_received_total", "Non-transactional logical messages (heartbeats) received; their position is confirmed when nothing is in flight."),
	}
	if reg != nil {
		reg.MustRegister(m.receivedLSN, m.confirmedLSN, m.lagBytes, m.retainedWAL, m.connected,
			m.transactions, m.changes, m.reconnects, m.handoffWait, m.heartbeats)
	}
	return m
}

func (m *Metrics) setGauge(g func(*Metrics) prometheus.Gauge, v float64) {
	if m != nil {
		g(m).Set(v)
	}
}

func (m *Metrics) addCounter(c func(*Metrics) prometheus.Counter, v float64) {
	if m != nil {
		c(m).Add(v)
	}
}
