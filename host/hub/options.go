package hub

import (
	"log/slog"
	"time"

	"github.com/wagg/wagg/host/auth"
)

// Every default of the hub, and every fixed bound on what it keeps, is
// stated here and nowhere else. The limits on what a client may send are
// part of the protocol (protocol.go, session.go).

// Defaults of Options.
const (
	defaultQueueFrames   = 256
	defaultKeepClosed    = 10
	defaultHistory       = 1024
	defaultMaxConnsPerIP = 256
	// DefaultMaxGroupsPerPane is the default of Options.MaxGroupsPerPane.
	DefaultMaxGroupsPerPane = 1_000_000
	// DefaultMaxBytes is the default of Options.MaxBytes.
	DefaultMaxBytes = 2 << 30

	defaultPingEvery    = 30 * time.Second
	defaultWriteTimeout = 30 * time.Second
	defaultSweepEvery   = 250 * time.Millisecond
	defaultCloseGrace   = 3 * time.Second
)

// Fixed bounds on the state of one aggregator.
const (
	// maxOpenPanes bounds the panes of one window that are not closed yet.
	// The watermark keeps the real number small (a hopping window has at
	// most size/slide open panes per partition); the bound only stops a
	// broken pipeline from growing the hub without limit. Past it the oldest
	// pane goes, open or not.
	maxOpenPanes = 4096
	// maxKeyCache and maxKeyCacheBytes bound the decoded keys kept for
	// reuse across panes, by count and by the bytes of the keys and their
	// JSON: it also holds the keys of groups gone.
	maxKeyCache      = 1 << 20
	maxKeyCacheBytes = 256 << 20
	// maxHistoryBytes bounds the encoded deltas kept for resume, next to the
	// History count, so a burst of huge deltas (every group of a closing
	// pane) cannot hold gigabytes.
	maxHistoryBytes = 64 << 20
)

// Options configure a Hub. A nil *Options, and every zero field, takes the
// default stated on the field.
type Options struct {
	// QueueFrames is how many deltas a subscriber may be behind before it is
	// treated as slow (default 256). A slow subscriber's backlog is coalesced
	// into one delta holding the latest value of each row, so a subscriber on
	// a thin link gets fewer, larger frames instead of an ever-growing lag.
	QueueFrames int
	// KeepClosed is how many closed panes of each tumbling or hopping window
	// the hub keeps for snapshots (default 10). Older closed panes are evicted
	// and announced in the delta that evicts them; rows arriving later for an
	// evicted pane are dropped (ClickHouse has them).
	KeepClosed int
	// History is how many deltas of each aggregator are kept (default 1024,
	// at least QueueFrames). They serve resumes after a reconnect and
	// subscribers that are behind; a subscriber that needs a delta no longer
	// kept is closed with StatusSlowConsumer. The kept deltas are also
	// bounded to 64 MiB of encoded frames.
	History int
	// OriginPatterns are the cross-origin hosts allowed to open the
	// WebSocket, passed to websocket.AcceptOptions. The request's own host
	// is always allowed.
	OriginPatterns []string
	// Auth verifies the tokens of subscriptions; nil lets every
	// subscription through (open mode, loopback only).
	Auth *auth.Verifier
	// MaxConnsPerIP bounds the WebSocket connections of one remote address
	// when Auth is set (default 256); the next handshake gets 429. Open
	// mode serves loopback only and has no such bound.
	MaxConnsPerIP int
	// MaxGroupsPerPane bounds the groups one pane of an aggregator holds,
	// the rows of all partitions merged (default 1,000,000): the hub's
	// memory grows with what plugins emit, and a plugin may emit a new key
	// per record. Publish leaves out rows that would create more and
	// returns a *TooManyGroupsError.
	MaxGroupsPerPane int
	// MaxBytes bounds the memory an aggregator's groups take in all its
	// panes of all its windows together, as counted by groupCost (default
	// 2 GiB, about 4 million groups of short keys). maxOpenPanes times
	// MaxGroupsPerPane is billions of groups, of keys as long as a flush
	// holds: a plugin emitting fresh keys into panes that never close would
	// grow the hub until the host runs out of memory. At the bound the
	// oldest closed panes are evicted first (the rows of a closed pane are
	// in ClickHouse); rows that would still pass it are left out and
	// Publish returns a *TooManyGroupsError.
	MaxBytes int64
	// Logger receives the hub's warnings and debug events (default
	// slog.Default()).
	Logger *slog.Logger

	// Timings, unexported so tests can shorten them.
	pingEvery    time.Duration // WebSocket ping to an idle subscriber (30s)
	writeTimeout time.Duration // one frame write; past it the TCP connection is dropped (30s)
	sweepEvery   time.Duration // how often subscribers that fell out of History are found (250ms)
	closeGrace   time.Duration // Close waits this long for close handshakes before dropping connections (3s)
}

func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	def(&c.QueueFrames, defaultQueueFrames)
	def(&c.KeepClosed, defaultKeepClosed)
	def(&c.History, defaultHistory)
	def(&c.MaxConnsPerIP, defaultMaxConnsPerIP)
	def(&c.MaxGroupsPerPane, DefaultMaxGroupsPerPane)
	def(&c.MaxBytes, DefaultMaxBytes)
	c.History = max(c.History, c.QueueFrames)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	def(&c.pingEvery, defaultPingEvery)
	def(&c.writeTimeout, defaultWriteTimeout)
	def(&c.sweepEvery, defaultSweepEvery)
	def(&c.closeGrace, defaultCloseGrace)
	return c
}

// def sets *v to d when it is zero or negative.
func def[T int | int64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}
