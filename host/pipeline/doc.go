// Package pipeline runs one deployment: a Kafka consumer group on the
// deployment's topic, and for each assigned partition a goroutine that owns
// a plugin instance. Records are decoded into the plugin's typed columns,
// checked against the watermark, folded in by the plugin in batches, emitted
// to the live hub on the emit cadence, and on the checkpoint cadence written
// to ClickHouse (rows first, then the checkpoint) before the Kafka offsets
// are committed. Bad records go to the dead-letter topic with the reason.
//
// It does not validate plugins or deployment specs (plugins does) and does
// not serve anything (api and hub do).
package pipeline
