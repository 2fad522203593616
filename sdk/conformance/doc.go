// Package conformance holds the contract every wagg SDK is held to, as data:
// vectors (vectors/*.json) give a deployment's windows and a sequence of
// calls (batches in, flushes, snapshots, restarts, corrupt inputs) with the
// rows, snapshot bytes and error codes that must come out. The test runs the
// Go, C, Rust and AssemblyScript builds of the same aggregators (examples/votes and
// sdk/conformance/stats) through host/sandbox and requires every build to
// give exactly what the vectors say.
//
// The SDKs share one snapshot layout, so the snapshot bytes are part of the
// contract too: a deployment may move between the builds of one aggregator
// in different languages and keep its state.
//
// The vectors' outputs come from the Go build: after a deliberate change of
// behaviour, regenerate them with
//
//	go test ./sdk/conformance -run TestVectors -update
//
// and review the diff. The package has no code outside its test.
package conformance
