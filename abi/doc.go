// Package abi is the contract between the wagg host and its WebAssembly
// aggregators: the ABI version, the names of the exports a plugin provides,
// the imports it may use, the error codes, the window arithmetic both sides
// share, and the binary codecs of the record batch (host to guest) and the
// output rows (guest to host).
//
// It imports the standard library only, so both the host (host/...) and the
// guest SDKs (sdk/go) depend on it without depending on each other. It is not
// a place for runtime behaviour: no I/O, no goroutines, no Kafka or Wasm.
//
// ABI.md in this folder is the reference for plugin authors; the constants
// and layouts here are its executable form.
package abi
