package pipeline

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the pipeline's Prometheus series, labelled by deployment.
type Metrics struct {
	Records     *prometheus.CounterVec   // by outcome: processed, dead_letter
	DeadLetters *prometheus.CounterVec   // by reason: malformed, late, produce_failed
	Rows        *prometheus.CounterVec   // rows emitted by plugins
	Checkpoints *prometheus.CounterVec   // by result: ok, error
	CallSeconds *prometheus.HistogramVec // plugin call duration, by call
	Watermark   *prometheus.GaugeVec     // per partition, Unix seconds
	Partitions  *prometheus.GaugeVec     // partitions currently owned
	Failures    *prometheus.CounterVec   // partitions parked by a plugin failure
}

// NewMetrics registers the series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wagg_records_total", Help: "Kafka records handled, by outcome.",
		}, []string{"deployment", "outcome"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wagg_dead_letters_total", Help: "Records sent to the dead-letter topic, by reason.",
		}, []string{"deployment", "reason"}),
		Rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wagg_rows_emitted_total", Help: "Rows emitted by plugins at flushes.",
		}, []string{"deployment"}),
		Checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wagg_checkpoints_total", Help: "Checkpoints written (rows, snapshot, offset), by result.",
		}, []string{"deployment", "result"}),
		CallSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wagg_plugin_call_seconds", Help: "Duration of calls into plugins.",
			Buckets: prometheus.ExponentialBuckets(1e-5, 4, 10),
		}, []string{"deployment", "call"}),
		Watermark: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wagg_watermark_seconds", Help: "Event-time watermark per partition (Unix seconds).",
		}, []string{"deployment", "partition"}),
		Partitions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wagg_partitions_owned", Help: "Partitions this host currently processes.",
		}, []string{"deployment"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wagg_partition_failures_total", Help: "Partitions stopped by a plugin failure.",
		}, []string{"deployment"}),
	}
	reg.MustRegister(m.Failures, m.Records, m.DeadLetters, m.Rows, m.Checkpoints, m.CallSeconds, m.Watermark, m.Partitions)
	return m
}
