// Package sink writes aggregator rows to ClickHouse: one table per
// deployment, created from the plugin's declared schema, written
// idempotently (ReplacingMergeTree versioned by the Kafka offset the rows
// are current to), and a view that merges the per-partition rows into the
// values analysts query. It does not decide when to write: the pipeline
// calls Write before each checkpoint.
package sink
