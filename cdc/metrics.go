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
	deadLinks    prometheus.Counter
	handoffWait  prometheus.Counter
	heartbeats   prometheus.Counter

	// Slot health (invalidation.go, owner.go).
	walStatus     *prometheus.GaugeVec
	safeWAL       prometheus.Gauge
	invalidations prometheus.Counter
	standby       prometheus.Gauge
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
		deadLinks:    c("dead_links_total", "Replication connections given up as dead: nothing received within database.dead_link_timeout."),
		handoffWait:  c("handoff_wait_seconds_total", "Time the reader waited for the sink to take a transaction."),
		heartbeats:   c("heartbeats_received_total", "Non-transactional logical messages (heartbeats) received; their position is confirmed when nothing is in flight."),

		walStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "snorky", Subsystem: "cdc", Name: "slot_wal_status",
			Help: "1 for the slot's wal_status in pg_replication_slots (reserved, extended, unreserved: lost at the next checkpoint unless it catches up, lost), 0 for the others (polled)."},
			[]string{"status"}),
		safeWAL:       g("slot_safe_wal_size_bytes", "WAL that can still be written before the slot is lost (pg_replication_slots.safe_wal_size); -1 when max_slot_wal_keep_size is -1 (no limit) (polled)."),
		invalidations: c("slot_invalidations_total", "Replication slots found invalidated (wal_status lost), dropped and recreated with a new stream epoch; clients had to refetch."),
		standby:       g("standby", "1 while another process owns the slot and this reader waits to take over."),
	}
	if reg != nil {
		reg.MustRegister(m.receivedLSN, m.confirmedLSN, m.lagBytes, m.retainedWAL, m.connected,
			m.transactions, m.changes, m.reconnects, m.deadLinks, m.handoffWait, m.heartbeats,
			m.walStatus, m.safeWAL, m.invalidations, m.standby)
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
