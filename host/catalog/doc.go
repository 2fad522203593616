// Package catalog is what every host of a cluster shares besides the data:
// the plugins (their bytes) and the deployment specs, with the failure of a
// deployment. It keeps them in one compacted Kafka topic with one partition,
// in the manner of Kafka Connect's config topic: the log's order is the one
// order every host applies, so no consensus of wagg's own is needed. A host
// replays the topic when it starts and follows it while it runs; what one
// host writes, every host applies within the time a fetch takes.
//
// It is not a store of results (ClickHouse holds rows and checkpoints), and
// it decides nothing: host/deploy starts and stops what the catalog says.
//
// Records (key: value):
//
//	plugin/<name>@<version>/<sha256>   the .wasm bytes (first per name@version wins); a tombstone: deleted
//	deployment/<name>                  the spec, JSON; a tombstone: undeployed
//	failed/<name>                      a Failure, JSON; a tombstone: cleared
//
// A deployment's revision is the offset of its record: a failure names
// the revision it happened in, so deploying again (a new revision)
// clears it everywhere without a second write.
package catalog
