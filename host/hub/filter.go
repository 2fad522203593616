package hub

import (
	"encoding/json"
	"math"
	"strconv"

	"github.com/wagg/wagg/abi"
)

// filter is a compiled subscription: which windows and key values a
// subscriber wants. The zero filter wants everything.
type filter struct {
	windows []bool         // by window index; nil: every window
	keys    []map[any]bool // by key column; nil: no key filter; a nil entry: any value of that column
	panes   int            // snapshot: latest panes per windowed window, 0 all
	all     bool           // no window or key restriction: the shared delta bytes fit
}

// compileFilter checks a subscribe against the aggregator's windows and key
// columns and returns the filter, or the error frame to send.
func compileFilter(a *aggState, s *Subscribe) (*filter, *protoError) {
	f := &filter{panes: s.Panes}
	if len(s.Windows) > 0 {
		f.windows = make([]bool, len(a.windows))
		for _, name := range s.Windows {
			i := a.windowIndex(name)
			if i < 0 {
				return nil, refuse(CodeUnknownWindow, "aggregator %q has no window %.64q", a.name, name)
			}
			f.windows[i] = true
		}
		every := true
		for _, ok := range f.windows {
			every = every && ok
		}
		if every {
			f.windows = nil
		}
	}
	if len(s.Keys) > 0 {
		f.keys = make([]map[any]bool, len(a.schema.Keys))
		for name, vals := range s.Keys {
			col := -1
			for i, c := range a.schema.Keys {
				if c.Name == name {
					col = i
				}
			}
			if col < 0 {
				return nil, refuse(CodeUnknownKey, "aggregator %q has no key column %.64q", a.name, name)
			}
			if len(vals) == 0 {
				return nil, refuse(CodeBadRequest, "keys.%s: empty list; leave the column out to take every value", name)
			}
			set := make(map[any]bool, len(vals))
			for _, v := range vals {
				kv, ok := keyValue(a.schema.Keys[col].Type, v)
				if !ok {
					return nil, refuse(CodeBadKey, "keys.%s: %.64v is not a %s", name, v, a.schema.Keys[col].Type)
				}
				set[kv] = true
			}
			f.keys[col] = set
		}
	}
	f.all = f.windows == nil && f.keys == nil
	return f, nil
}

// keyValue converts a JSON filter value to the Go value KeyValues decodes for
// a column of type t, so that the two compare equal as map keys.
func keyValue(t abi.Type, v any) (any, bool) {
	if q, ok := v.(queryValue); ok {
		if t == abi.String {
			return string(q), true
		}
		v = json.Number(q)
	}
	switch t {
	case abi.String:
		s, ok := v.(string)
		return s, ok
	case abi.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return nil, false
		}
		if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
			return i, true
		}
		// 1e3 is a JSON spelling of 1000.
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
			return nil, false
		}
		return int64(f), true
	case abi.Float64:
		n, ok := v.(json.Number)
		if !ok {
			return nil, false
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			return nil, false
		}
		return normFloat(f), true
	}
	return nil, false
}

// normFloat makes -0 and 0 the same map key.
func normFloat(f float64) float64 {
	if f == 0 {
		return 0
	}
	return f
}

func (f *filter) window(i int) bool { return f.windows == nil || f.windows[i] }

func (f *filter) matchKey(k *keyInfo) bool {
	for i, set := range f.keys {
		if set == nil {
			continue
		}
		v := k.vals[i]
		if x, ok := v.(float64); ok {
			v = normFloat(x)
		}
		if !set[v] {
			return false
		}
	}
	return true
}

func (f *filter) matchRow(r *outRow) bool { return f.window(r.win) && f.matchKey(r.k) }
