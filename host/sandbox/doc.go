// Package sandbox runs wagg plugins in wazero: it compiles a module once
// (with a compilation cache), checks it against ABI v1 (allowed imports,
// required exports and their signatures), and instantiates it once per
// partition with no filesystem, network, environment or real clock.
//
// An Instance is not safe for concurrent use: each partition owns its own.
// The package knows nothing of Kafka, windows or ClickHouse; it moves bytes
// across the ABI and turns guest failures into errors.
package sandbox
