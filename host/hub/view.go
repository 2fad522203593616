package hub

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/wagg/wagg/abi"
)

// Errors View.Apply returns for a frame it cannot apply. Either way the View
// keeps its state; resubscribing with View.Resume gets the client back on
// track (the hub answers with the missing deltas or a fresh snapshot).
var (
	// ErrGap: a delta does not start where the View is (its prev is not the
	// View's seq), or a resume does not match the View's state.
	ErrGap = errors.New("hub: gap in the delta sequence")
	// ErrStaleEpoch: a delta or resume belongs to another epoch than the
	// View's snapshot.
	ErrStaleEpoch = errors.New("hub: frame from another epoch")
	// ErrNoSnapshot: a delta or resume arrived before any snapshot.
	ErrNoSnapshot = errors.New("hub: delta before a snapshot")
)

// View is a client's copy of a subscription's rows: it applies a snapshot,
// then deltas, checking that each delta continues exactly where the View is.
// The zero View is ready. A View is not safe for concurrent use.
type View struct {
	Aggregator string
	Epoch      string
	Seq        uint64
	Windows    []abi.Window
	Keys       []abi.Column
	Metrics    []abi.Metric

	live  bool
	panes map[Pane]map[string]Row // by canonical key JSON
}

func (v *View) put(r Row) {
	b, _ := json.Marshal(r.Key) // map keys sorted: a canonical form
	p := Pane{r.Window, r.Start}
	m := v.panes[p]
	if m == nil {
		m = map[string]Row{}
		v.panes[p] = m
	}
	m[string(b)] = r
}

// Apply applies a server frame. Snapshots replace the state; deltas must
// carry the View's epoch and continue from its seq (prev == Seq). Pongs and
// unknown frame types are ignored; an error frame is returned as *Error.
func (v *View) Apply(f Frame) error {
	switch f.Type {
	case TypeSnapshot:
		v.Aggregator, v.Epoch, v.Seq = f.Aggregator, f.Epoch, f.Seq
		v.Windows, v.Keys, v.Metrics = f.Windows, f.Keys, f.Metrics
		v.panes = map[Pane]map[string]Row{}
		for _, r := range f.Rows {
			v.put(r)
		}
		v.live = true
	case TypeResumed:
		switch {
		case !v.live:
			return ErrNoSnapshot
		case f.Epoch != v.Epoch:
			return fmt.Errorf("%w: resumed %s, view holds %s", ErrStaleEpoch, f.Epoch, v.Epoch)
		case f.Seq != v.Seq:
			return fmt.Errorf("%w: resumed at %d, view holds %d", ErrGap, f.Seq, v.Seq)
		}
	case TypeDelta:
		switch {
		case !v.live:
			return ErrNoSnapshot
		case f.Epoch != v.Epoch:
			return fmt.Errorf("%w: delta of %s, view holds %s", ErrStaleEpoch, f.Epoch, v.Epoch)
		case f.Prev != v.Seq || f.Seq <= f.Prev:
			return fmt.Errorf("%w: delta %d follows %d, view holds %d", ErrGap, f.Seq, f.Prev, v.Seq)
		}
		for _, r := range f.Rows {
			v.put(r)
		}
		for _, p := range f.Evicted {
			delete(v.panes, p)
		}
		v.Seq = f.Seq
	case TypeError:
		return &Error{Code: f.Code, Message: f.Message}
	}
	return nil
}

// Live reports whether the View holds a snapshot.
func (v *View) Live() bool { return v.live }

// Resume is what to send when reconnecting, so the hub can continue from the
// View's state; nil before the first snapshot.
func (v *View) Resume() *Resume {
	if !v.live {
		return nil
	}
	return &Resume{Epoch: v.Epoch, Seq: v.Seq}
}

// Rows returns the current rows, ordered by window (as the snapshot listed
// them), start, and key columns in schema order (numbers by value).
func (v *View) Rows() []Row {
	order := map[string]int{}
	for i, w := range v.Windows {
		order[w.Name] = i
	}
	n := 0
	for _, m := range v.panes {
		n += len(m)
	}
	out := make([]Row, 0, n)
	for _, m := range v.panes {
		for _, r := range m {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Row) int {
		if a.Window != b.Window {
			if c := cmp.Compare(order[a.Window], order[b.Window]); c != 0 {
				return c
			}
			return strings.Compare(a.Window, b.Window)
		}
		if c := cmp.Compare(a.Start, b.Start); c != 0 {
			return c
		}
		for _, k := range v.Keys {
			if c := compareKey(a.Key[k.Name], b.Key[k.Name]); c != 0 {
				return c
			}
		}
		return 0
	})
	return out
}

func compareKey(a, b any) int {
	an, aok := a.(json.Number)
	bn, bok := b.(json.Number)
	if aok && bok {
		if ai, err := an.Int64(); err == nil {
			if bi, err := bn.Int64(); err == nil {
				return cmp.Compare(ai, bi)
			}
		}
		af, _ := an.Float64()
		bf, _ := bn.Float64()
		return cmp.Compare(af, bf)
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}
