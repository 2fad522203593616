package window

import (
	"fmt"

	"github.com/wagg/wagg/abi"
)

// Reasons a record's event time is refused before it reaches a plugin (the
// wagg.reason header of its dead letter).
const (
	ReasonFuture     = "future"       // more than max_future ahead of the wall clock
	ReasonOutOfRange = "out_of_range" // a window of it would start before 1970 or end past what a ClickHouse DateTime holds
)

// MaxEventTime is the last millisecond a ClickHouse DateTime (UInt32
// seconds) holds.
const MaxEventTime = abi.MaxTimeMs

// Guard checks event times against the wall clock and the range the sink can
// store. A refused record moves no watermark.
type Guard struct {
	MaxFutureMs int64 // 0: no limit beyond the range
	minMs       int64 // the first event time whose every pane starts at or after the epoch
	maxMs       int64 // the last event time whose every pane ends within a DateTime
}

// NewGuard returns a guard for a deployment's windows: every pane a record
// joins must fit the sink, so that its rows are ones the sandbox accepts
// from the plugin (abi.Window.HasStart).
func NewGuard(maxFutureMs int64, windows []abi.Window) Guard {
	g := Guard{MaxFutureMs: maxFutureMs, maxMs: MaxEventTime}
	for _, w := range windows {
		g.minMs = max(g.minMs, w.Preroll())
		g.maxMs = min(g.maxMs, MaxEventTime-w.SizeMs)
	}
	return g
}

// Check returns "" for an acceptable event time, else the reason and a
// message a person can act on.
func (g Guard) Check(ts, nowMs int64) (reason, msg string) {
	switch {
	case ts < 0:
		return ReasonOutOfRange, fmt.Sprintf("out_of_range: event time %d ms is before 1970-01-01", ts)
	case ts < g.minMs:
		return ReasonOutOfRange, fmt.Sprintf("out_of_range: event time %d ms joins a hopping window that starts before 1970-01-01 (the first time accepted is %d ms)", ts, g.minMs)
	case ts > g.maxMs:
		return ReasonOutOfRange, fmt.Sprintf("out_of_range: event time %d ms is past what a ClickHouse DateTime holds", ts)
	case g.MaxFutureMs > 0 && ts-nowMs > g.MaxFutureMs:
		return ReasonFuture, fmt.Sprintf("future: event time %d ms is %d ms ahead of the host clock (max_future %d ms)", ts, ts-nowMs, g.MaxFutureMs)
	}
	return "", ""
}
