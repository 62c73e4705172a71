package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are telkeys' Prometheus metrics. Labels hold route templates,
// command names and error codes: never a key, a token or a path value.
type Metrics struct {
	httpRequests    *prometheus.CounterVec
	httpDuration    *prometheus.HistogramVec
	commands        *prometheus.CounterVec
	commandDuration *prometheus.HistogramVec
	// ProjectionPending is the number of events the projector has yet to apply.
	ProjectionPending prometheus.Gauge
	quarantined       *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telkeys_http_requests_total", Help: "HTTP requests by method, route template and status.",
		}, []string{"method", "route", "status"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "telkeys_http_request_duration_seconds", Help: "HTTP request latency by route template.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}, []string{"method", "route"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telkeys_commands_total", Help: "Commands by name and result (ok or the problem code).",
		}, []string{"command", "result"}),
		commandDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "telkeys_command_duration_seconds", Help: "Command latency, append included, read-model wait excluded.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2.5, 12),
		}, []string{"command"}),
		ProjectionPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "telkeys_projection_pending_events", Help: "Events stored but not yet applied to the read models (projection lag).",
		}),
		quarantined: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telkeys_events_quarantined_total", Help: "Stored messages that are not valid events, skipped by every reader, by reason.",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.httpRequests, m.httpDuration, m.commands, m.commandDuration, m.ProjectionPending, m.quarantined)
	return m
}

// ObserveCommand records one command; it fits commands.Config.Observe.
func (m *Metrics) ObserveCommand(command string, err error, took time.Duration) {
	result := "ok"
	if err != nil {
		result = problemFor(err).Code
	}
	m.commands.WithLabelValues(command, result).Inc()
	m.commandDuration.WithLabelValues(command).Observe(took.Seconds())
}

// NodeLag exports how many events each live node is behind telkeys' own
// validator: telkeys_node_lag_events{node}.
func NodeLag(nodes Nodes, v Verifier) prometheus.Collector { return nodeLag{nodes, v} }

type nodeLag struct {
	nodes Nodes
	v     Verifier
}

var nodeLagDesc = prometheus.NewDesc("telkeys_node_lag_events", "Events a live TelAPI node has yet to apply.", []string{"node"}, nil)

func (nodeLag) Describe(ch chan<- *prometheus.Desc) { ch <- nodeLagDesc }

func (l nodeLag) Collect(ch chan<- prometheus.Metric) {
	head := l.v.Applied()
	for _, n := range l.nodes.Nodes() {
		if n.Live {
			ch <- prometheus.MustNewConstMetric(nodeLagDesc, prometheus.GaugeValue, float64(head-min(head, n.Applied)), n.Name)
		}
	}
}

// Quarantined counts one message that is not a valid event; it fits
// projections.Projector.OnQuarantine.
func (m *Metrics) Quarantined(reason string) { m.quarantined.WithLabelValues(reason).Inc() }

func (m *Metrics) observeHTTP(method, route string, status int, took time.Duration) {
	m.httpRequests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(method, route).Observe(took.Seconds())
}
