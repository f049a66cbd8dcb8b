package wsapi

import (
	"bytes"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	open            prometheus.Gauge
	slowConsumers   prometheus.Counter
	rejectedOrigins prometheus.Counter
	rateLimited     prometheus.Counter
	rateLimitCloses prometheus.Counter
	out             map[string]prometheus.Counter
	outOther        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, services []string, queued func() float64) (*metrics, error) {
	outVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "snorky_ws_messages_out_total",
		Help: "Messages written to WebSocket clients, by service.",
	}, []string{"service"})
	m := &metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "snorky_ws_connections",
			Help: "Open WebSocket connections.",
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "snorky_ws_slow_consumer_closes_total",
			Help: "Connections closed with 4008 because their send queue passed its bound.",
		}),
		rejectedOrigins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "snorky_ws_rejected_handshakes_total",
			Help: "WebSocket handshakes refused because of their Origin.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "snorky_ws_rate_limited_messages_total",
			Help: "Messages answered \"Rate limit exceeded\".",
		}),
		rateLimitCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "snorky_ws_rate_limit_closes_total",
			Help: "Connections closed with 4029 after sustained abuse.",
		}),
		out:      map[string]prometheus.Counter{},
		outOther: outVec.WithLabelValues(""),
	}
	for _, s := range services {
		m.out[s] = outVec.WithLabelValues(s)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.open, m.slowConsumers, m.rejectedOrigins, m.rateLimited, m.rateLimitCloses, outVec,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "snorky_ws_send_queue_bytes",
			Help: "Bytes queued for WebSocket clients and not yet written.",
		}, queued),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

var servicePrefix = []byte(`{"service":"`)

// countOut counts written frames by the service named at their start (every
// frame is an envelope this server encoded).
func (m *metrics) countOut(frames ...[]byte) {
	for _, f := range frames {
		c := m.outOther
		if bytes.HasPrefix(f, servicePrefix) {
			rest := f[len(servicePrefix):]
			if i := bytes.IndexByte(rest, '"'); i >= 0 {
				if sc, ok := m.out[string(rest[:i])]; ok {
					c = sc
				}
			}
		}
		c.Inc()
	}
}
