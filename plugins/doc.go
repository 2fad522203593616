// Package plugins is the plugin registry and the deployment specs: it
// validates an uploaded module completely before storing anything (size,
// compiles, imports, exports, ABI version, declared schema, a dry run on a
// sample batch), stores it addressed by its sha256 with a manifest per
// name@version, and parses and validates deployments. It runs nothing on
// Kafka: the pipeline does.
package plugins
