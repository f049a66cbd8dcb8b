package datasync

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	deltas, deliveries, txns      prometheus.Counter
	authorized, acquired, expired prometheus.Counter
	dropped, badMessages          prometheus.Counter
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
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.deltas, m.deliveries, m.txns, m.authorized, m.acquired, m.expired, m.dropped, m.badMessages,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "snorky_datasync_subscriptions", Help: "Live subscriptions."},
			func() float64 { return float64(e.Subscriptions()) }),
	} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}
