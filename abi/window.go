package abi

import (
	"encoding/json"
	"fmt"
	"math"
)

// WindowKind is the shape of a window.
type WindowKind string

const (
	Tumbling WindowKind = "tumbling" // fixed size, no overlap
	Hopping  WindowKind = "hopping"  // fixed size, a new one every slide
	Global   WindowKind = "global"   // one window for all time: running totals
)

// Window is one window a deployment aggregates in. Times are Unix
// milliseconds of event time. Sizes and slides are whole seconds so that
// window bounds are exact in ClickHouse DateTime columns.
type Window struct {
	Name    string     `json:"name"`
	Kind    WindowKind `json:"kind"`
	SizeMs  int64      `json:"size_ms,omitempty"`
	SlideMs int64      `json:"slide_ms,omitempty"`
}

// MaxTimeMs is the last millisecond of event time a window may reach: what a
// ClickHouse DateTime (UInt32 seconds) holds. Window starts are at or after
// the epoch and window ends at or before MaxTimeMs+1.
const MaxTimeMs = math.MaxUint32*1000 + 999

// MaxWindowsPerRecord bounds how many hopping windows one record joins.
const MaxWindowsPerRecord = 64

// Validate names the first problem with a window.
func (w Window) Validate() error {
	if !nameRE.MatchString(w.Name) {
		return fmt.Errorf("name %q: want lower-case letters, digits and _", w.Name)
	}
	switch w.Kind {
	case Global:
		if w.SizeMs != 0 || w.SlideMs != 0 {
			return fmt.Errorf("%s: a global window has no size or slide", w.Name)
		}
		return nil
	case Tumbling:
		if w.SlideMs != 0 && w.SlideMs != w.SizeMs {
			return fmt.Errorf("%s.slide: a tumbling window has no slide", w.Name)
		}
	case Hopping:
		if w.SlideMs <= 0 || w.SlideMs%1000 != 0 {
			return fmt.Errorf("%s.slide: want a positive whole number of seconds", w.Name)
		}
		if w.SizeMs%w.SlideMs != 0 || w.SizeMs/w.SlideMs > MaxWindowsPerRecord {
			return fmt.Errorf("%s.size: want a multiple of the slide, at most %d slides", w.Name, MaxWindowsPerRecord)
		}
	default:
		return fmt.Errorf("%s.kind %q: want tumbling, hopping or global", w.Name, w.Kind)
	}
	if w.SizeMs <= 0 || w.SizeMs%1000 != 0 {
		return fmt.Errorf("%s.size: want a positive whole number of seconds", w.Name)
	}
	return nil
}

func (w Window) slide() int64 {
	if w.Kind == Hopping {
		return w.SlideMs
	}
	return w.SizeMs
}

// Starts appends to dst the start of every window of w that contains ts,
// latest first. A global window has the single start 0. Starts that would
// fall below math.MinInt64 are left out, so any ts is safe to pass.
func (w Window) Starts(ts int64, dst []int64) []int64 {
	if w.Kind == Global {
		return append(dst, 0)
	}
	slide := w.slide()
	s, ok := latestStart(ts, slide)
	if !ok {
		return dst
	}
	// ts-s never overflows: 0 <= ts-s < size+slide.
	for ts-s < w.SizeMs {
		dst = append(dst, s)
		if s < math.MinInt64+slide {
			break
		}
		s -= slide
	}
	return dst
}

// latestStart is the start of the latest window of the given slide that
// begins at or before ts, and false when that start is below math.MinInt64.
func latestStart(ts, slide int64) (int64, bool) {
	m := ts % slide
	if m < 0 {
		m += slide
	}
	if ts < math.MinInt64+m {
		return 0, false
	}
	return ts - m, true
}

// HasStart reports whether start is the start of a window of w that lies
// within the times a sink holds: 0 for a global window; otherwise a multiple
// of the slide from the epoch on, ending by MaxTimeMs+1. A guest's row whose
// start fails this is refused (host/sandbox), so no plugin can write a window
// that does not exist or that a DateTime column would wrap onto another.
func (w Window) HasStart(start int64) bool {
	if w.Kind == Global {
		return start == 0
	}
	slide := w.slide()
	return slide > 0 && start >= 0 && start%slide == 0 && start <= MaxTimeMs+1-w.SizeMs
}

// Preroll is how long after the epoch the first event time lies whose
// windows all start at or after it: a hopping window's earliest pane starts
// size-slide before the event, the others' at or before it.
func (w Window) Preroll() int64 {
	if w.Kind == Hopping {
		return w.SizeMs - w.SlideMs
	}
	return 0
}

// End is the exclusive end of the window that starts at start. It saturates
// at math.MaxInt64 instead of overflowing.
func (w Window) End(start int64) int64 {
	if w.Kind == Global || start > math.MaxInt64-w.SizeMs {
		return math.MaxInt64
	}
	return start + w.SizeMs
}

// Closed reports whether the window starting at start is final once the
// watermark has reached watermark.
func (w Window) Closed(start, watermark int64) bool {
	return w.Kind != Global && w.End(start) <= watermark
}

// Late reports whether a record with event time ts arrives after the earliest
// window it belongs to has closed, that is End(earliest start) <= watermark.
// Such a record is dead-lettered whole, so that every window either counts it
// or the dead-letter topic holds it. A ts so low that none of its windows has
// a representable start is late.
func (w Window) Late(ts, watermark int64) bool {
	if w.Kind == Global {
		return false
	}
	slide := w.slide()
	s, ok := latestStart(ts, slide)
	if !ok || ts-s >= w.SizeMs {
		return !ok
	}
	// The earliest window holding ts starts j slides before s, with j the
	// largest such that ts-(s-j*slide) < size, unless that underflows.
	j := uint64(w.SizeMs-1-(ts-s)) / uint64(slide)
	j = min(j, (uint64(s)+1<<63)/uint64(slide)) // s - MinInt64, without overflow
	earliest := int64(uint64(s) - j*uint64(slide))
	return w.End(earliest) <= watermark
}

// Config is what the host hands a guest in wagg_init: the windows of its
// deployment, in the order that row window indexes refer to, and the
// deployment's own settings for the aggregator, as raw JSON.
//
// MaxGroups is the most groups the host keeps in one pane of this
// deployment (its sandbox.max_groups_per_pane); a guest should refuse a
// record that would create more, with ErrAggregate. 0: no limit.
type Config struct {
	ABI       int             `json:"abi"`
	Windows   []Window        `json:"windows"`
	Params    json.RawMessage `json:"params,omitempty"`
	MaxGroups int             `json:"max_groups,omitempty"`
	// MigrateFrom is the schema of the plugin that wrote the snapshot the
	// instance is about to restore, when that snapshot's state version is
	// one the plugin migrates (State.Migrates); absent otherwise. The
	// snapshot is laid out for that schema's keys and metrics, and the
	// plugin converts it into its own state as it restores it.
	MigrateFrom *Schema `json:"migrate_from,omitempty"`
}
