package window

import (
	"math"

	"github.com/wagg/wagg/abi"
)

// Watermark is one partition's watermark: the largest event time seen minus
// the allowed lateness, advanced by the wall clock when the partition is
// idle so that its windows still close. It never goes backwards.
type Watermark struct {
	windows  []abi.Window
	lateness int64
	idle     int64
	value    int64
	lastSeen int64 // wall clock ms of the last record
}

// New returns the watermark for a deployment's windows, starting from value
// (from a checkpoint; math.MinInt64 when none).
func New(windows []abi.Window, latenessMs, idleMs, value int64) *Watermark {
	return &Watermark{windows: windows, lateness: latenessMs, idle: idleMs, value: value}
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
func (w *Watermark) Advance(ts, nowMs int64) {
	w.lastSeen = nowMs
	if ts > math.MinInt64+w.lateness && ts-w.lateness > w.value {
		w.value = ts - w.lateness
	}
}

// Tick advances an idle partition's watermark by the wall clock: once no
// record has arrived for the idle timeout, the watermark moves to
// now - lateness, so the last windows of a quiet partition close.
func (w *Watermark) Tick(nowMs int64) {
	if w.idle <= 0 || w.value == Start {
		return // nothing to close yet
	}
	if w.lastSeen == 0 {
		w.lastSeen = nowMs // restored from a checkpoint: idle counts from now
		return
	}
	if nowMs-w.lastSeen >= w.idle && nowMs-w.lateness > w.value {
		w.value = nowMs - w.lateness
	}
}
