// Package hub delivers an aggregator's live results to dashboards over
// WebSocket, and over Server-Sent Events for clients that cannot open one
// (ServeSSE: the same frames, resume through Last-Event-ID).
//
// The pipeline calls Publish with the absolute per-partition values of the
// groups that changed; the hub merges them across partitions (by each
// metric's kind, see abi.Schema.Merge), numbers every change of an
// aggregator's merged state with a sequence number, and sends subscribers a
// snapshot followed by deltas. docs/protocol.md is the wire reference; this
// package holds the server (Hub), a Go client (Dial, Conn) and the client-side
// state machine (View) that `wagg tail` and the tests use.
//
// Design in one paragraph: each aggregator keeps its merged state and a ring
// of its last deltas (History). A delta is encoded once, at Publish, and its
// bytes are written as they are to every unfiltered subscriber. Subscribers
// have no queue of their own: each connection's writer goroutine walks the
// ring from its own cursor, so Publish costs the same for one subscriber or
// ten thousand and never waits for any of them. A subscriber that falls more
// than QueueFrames deltas behind gets its backlog coalesced into one delta
// (the latest value per row); one that falls out of the ring is closed with
// StatusSlowConsumer. The same ring serves resumes after a reconnect.
//
// Access: with Options.Auth set, every subscribe needs a token granting
// live:<aggregator> (in the frame, the wagg.bearer subprotocol or an
// Authorization header), and a subscription ends with StatusTokenExpired
// when its token does (docs/security.md).
//
// It is not a store: it keeps the running state the pipeline publishes, the
// last KeepClosed panes of each window and History deltas, and forgets the
// rest. ClickHouse holds the history.
package hub
