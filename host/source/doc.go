// Package source is wagg's side of Kafka: a member of a deployment's
// consumer group (the client, the poll loop, the assignment callbacks and
// the bookkeeping of offsets to commit), the dead-letter records it
// produces, and the one helper that creates a topic.
//
// It is not where exactness comes from: checkpoints in ClickHouse are (see
// host/checkpoint). Kafka's committed offsets only follow them, so that
// consumer-lag tooling stays truthful.
package source
