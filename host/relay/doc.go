// Package relay gives every host's hub the whole picture of a deployment:
// the rows of every partition, wherever it runs.
//
// Each host publishes the rows its partitions emit to its own hub at once
// and to the deployment's relay topic (one Kafka partition per source
// partition, the rows in the abi rows encoding, with the source offset they
// are current to, the deployment's generation and the publishing process in
// headers). Each host's relay reads every partition of that topic and hands
// the other hosts' rows to its hub. So what a host's hub receives grows with
// the data, not with the number of hosts.
//
// A host that starts (or starts a deployment) first loads the state that
// the partitions' last checkpoints left in ClickHouse, then reads the relay
// topic from shortly before those checkpoints. The hub drops rows older than
// what it holds for their partition (hub.PublishAt), so a replay after a
// handover never takes a value back. docs/protocol.md says what a client
// sees.
//
// It is not the source of truth (ClickHouse is): a relay record lost (a
// host killed before its produce) is made good by the next emit of the same
// groups, or by the replay of whichever host takes the partition over.
package relay
