// Package relay gives every host's hub the whole picture of a deployment:
// the rows of every partition, wherever it runs.
//
// Each host publishes the rows its partitions emit to its own hub at once
// and to the deployment's relay topic (source partition p on relay
// partition p modulo the topic's partition count, fixed when the topic is
// made, so the source may gain partitions; the rows in the abi rows
// encoding, with the source partition, the source offset they are current
// to, the deployment's generation and the publishing process in headers).
// Each host's relay reads every partition of that topic and hands the
// other hosts' rows to its hub. So what a host's hub receives grows with
// the data, not with the number of hosts.
//
// Where a host starts reading is exact, not a guess. Every checkpoint a
// partition saves records a relay position (the topic's ID and partition
// count, and an offset): an end offset of the relay partition listed
// before the partition's first publish past the checkpoint's offset. Every
// row emitted after that checkpoint lands at or after it. A host that
// starts loads each partition's checkpointed rows from ClickHouse, then
// applies that partition's relay records from its position on, and only
// those current to the checkpoint's offset or later; the hub drops rows
// older than what it holds for their partition (hub.PublishAt), so a
// replay after a handover never takes a value back.
//
// When records a host needs are gone (a position the relay no longer
// holds, a gap in a relay partition's offsets, the topic deleted or
// recreated), the partitions concerned are parked: the hub keeps showing
// the state they had, which is their exact state after some prefix of
// their records, and their records are ignored until a checkpoint comes
// whose position the relay still holds; then its rows are loaded and the
// partition is followed again. A value never goes back and never mixes
// records after a gap with a state from before it. docs/protocol.md says
// what a client sees.
//
// It is not the source of truth (ClickHouse is).
package relay
