package window

import (
	"math"

	"github.com/wagg/wagg/abi"
)

// Watermark is one partition's watermark: the largest accepted event time
// minus the allowed lateness. It never goes backwards and it is a function
// of the records accepted since the checkpoint it started from, so a replay
// reaches the same values at the same offsets. The one movement that does
// not come from a record, the idle advance, is made by the pipeline only at
// a checkpoint (where it is recorded) and only for a partition that has
// nothing left to fetch.
type Watermark struct {
	windows  []abi.Window
	lateness int64
	value    int64
}

// New returns the watermark for a deployment's windows, starting from value
// (from a checkpoint; Start when none).
func New(windows []abi.Window, latenessMs, value int64) *Watermark {
	return &Watermark{windows: windows, lateness: latenessMs, value: value}
}

// Start is the value of a watermark with no history.
const Start = math.MinInt64

// Value is the current watermark.
func (w *Watermark) Value() int64 { return w.value }

// Late reports whether a record with event time ts arrives after the
// earliest window it belongs to closed, for any of the windows.
func (w *Watermark) Late(ts int64) bool {
	for _, win := range w.windows {
		if win.Late(ts, w.value) {
			return true
		}
	}
	return false
}

// Advance moves the watermark past an accepted record. Checking each record
// with Late before advancing, record by record, makes the outcome
// independent of how records were batched.
func (w *Watermark) Advance(ts int64) {
	if ts > math.MinInt64+w.lateness && ts-w.lateness > w.value {
		w.value = ts - w.lateness
	}
}

// IdleTo is the watermark an idle advance at wall clock nowMs would reach:
// now - lateness, or the current value when that is not ahead. An idle
// advance never starts a watermark that has seen no record.
func (w *Watermark) IdleTo(nowMs int64) int64 {
	if w.value == Start || nowMs-w.lateness <= w.value {
		return w.value
	}
	return nowMs - w.lateness
}

// Set moves the watermark forward to v (an idle advance); never backwards.
func (w *Watermark) Set(v int64) {
	if v > w.value {
		w.value = v
	}
}
