package window

import (
	"fmt"
	"math"
)

// Reasons a record's event time is refused before it reaches a plugin (the
// wagg.reason header of its dead letter).
const (
	ReasonFuture     = "future"       // more than max_future ahead of the wall clock
	ReasonOutOfRange = "out_of_range" // before 1970 or past what a ClickHouse DateTime holds
)

// MaxEventTime is the last millisecond a ClickHouse DateTime (UInt32
// seconds) holds.
const MaxEventTime = math.MaxUint32*1000 + 999

// Guard checks event times against the wall clock and the range the sink can
// store. A refused record moves no watermark.
type Guard struct {
	MaxFutureMs int64 // 0: no limit beyond the range
	maxWindowMs int64
}

// NewGuard returns a guard for a deployment whose longest window is
// maxWindowMs: a pane's end must fit the sink too.
func NewGuard(maxFutureMs, maxWindowMs int64) Guard {
	return Guard{MaxFutureMs: maxFutureMs, maxWindowMs: maxWindowMs}
}

// Check returns "" for an acceptable event time, else the reason and a
// message a person can act on.
func (g Guard) Check(ts, nowMs int64) (reason, msg string) {
	switch {
	case ts < 0:
		return ReasonOutOfRange, fmt.Sprintf("out_of_range: event time %d ms is before 1970-01-01", ts)
	case ts > MaxEventTime-g.maxWindowMs:
		return ReasonOutOfRange, fmt.Sprintf("out_of_range: event time %d ms is past what a ClickHouse DateTime holds", ts)
	case g.MaxFutureMs > 0 && ts-nowMs > g.MaxFutureMs:
		return ReasonFuture, fmt.Sprintf("future: event time %d ms is %d ms ahead of the host clock (max_future %d ms)", ts, ts-nowMs, g.MaxFutureMs)
	}
	return "", ""
}
