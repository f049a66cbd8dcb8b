package datasync

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	deltas, deliveries, txns      prometheus.Counter
	authorized, acquired, expired prometheus.Counter
	dropped, badMessages          prometheus.Counter
	resumed, refetches, resets    prometheus.Counter
	tooLarge                      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, e *Engine) (*metrics, error) {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "snorky_datasync_" + name, Help: help})
	}
	m := &metrics{
		deltas:      c("deltas_routed_total", "Deltas routed to at least one subscription."),
		deliveries:  c("deliveries_total", "Deltas delivered to subscriptions (sent or buffered)."),
		txns:        c("transactions_total", "PostgreSQL transactions taken by the engine."),
		authorized:  c("subscriptions_authorized_total", "Subscriptions authorised."),
		acquired:    c("subscriptions_acquired_total", "Subscriptions acquired."),
		expired:     c("subscriptions_expired_total", "Subscriptions not acquired before their deadline."),
		dropped:     c("subscriptions_dropped_total", "Subscriptions dropped for too many pending deltas before acquire."),
		badMessages: c("sql_messages_rejected_total", "Malformed SQL messages (snorky.publish, snorky.publish_delta) skipped."),
		resumed:     c("subscriptions_resumed_total", "Subscriptions resumed with resumeSubscription."),
		refetches:   c("must_refetch_total", "Connections told to refetch (mustRefetch notification, or closed with 4008 when not opted in)."),
		resets:      c("stream_resets_total", "Replication streams reset (new epoch: the slot was recreated)."),
		tooLarge:    c("transactions_too_large_total", "Transactions over database.max_tx_bytes, not delivered (subscribers must refetch)."),
	}
	if reg == nil {
		return m, nil
	}
	window := func(name, help string, f func(WindowStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "snorky_datasync_window_" + name, Help: help},
			func() float64 { return f(e.Window()) })
	}
	for _, col := range []prometheus.Collector{m.deltas, m.deliveries, m.txns, m.authorized, m.acquired, m.expired, m.dropped, m.badMessages,
		m.resumed, m.refetches, m.resets, m.tooLarge,
		window("transactions", "Transactions held in the replay window.", func(s WindowStats) float64 { return float64(s.Transactions) }),
		window("bytes", "Bytes held in the replay window (row data plus overhead).", func(s WindowStats) float64 { return float64(s.Bytes) }),
		window("floor_lsn", "LSN after which the replay window holds every transaction.", func(s WindowStats) float64 { return float64(s.floorLSN) }),
		window("newest_lsn", "LSN of the stream position (the newest transaction taken).", func(s WindowStats) float64 { return float64(s.newestLSN) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "snorky_datasync_subscriptions", Help: "Live subscriptions."},
			func() float64 { return float64(e.Subscriptions()) }),
	} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}
