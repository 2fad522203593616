package hub

import (
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/wagg/wagg/abi"
)

// The server writes its frames by hand: rows are the hot path of every
// delta, and their shape is fixed, so appending bytes is both faster than
// encoding/json and lets NaN and infinities become null instead of failing.

func appendInt(b []byte, v int64) []byte { return strconv.AppendInt(b, v, 10) }

// appendFloat writes a float64 as a JSON number, or null when JSON has no
// number for it.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD, and
// U+2028 and U+2029 are escaped so the text is also valid JavaScript.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func (a *aggState) appendMetric(b []byte, j int, v uint64) []byte {
	if a.schema.Metrics[j].Type == abi.Float64 {
		return appendFloat(b, math.Float64frombits(v))
	}
	return appendInt(b, int64(v))
}

// appendRow writes one row object.
func (a *aggState) appendRow(b []byte, r *outRow) []byte {
	w := &a.wins[r.win]
	b = append(b, `{"window":`...)
	b = append(b, w.nameJSON...)
	b = append(b, `,"start":`...)
	var end int64
	if w.def.Kind != abi.Global {
		end = w.def.End(r.start)
		b = appendInt(b, r.start)
	} else {
		b = append(b, '0')
	}
	b = append(b, `,"end":`...)
	b = appendInt(b, end)
	b = append(b, `,"key":`...)
	b = append(b, r.k.json...)
	b = append(b, `,"values":{`...)
	for j, v := range r.metrics {
		if j > 0 {
			b = append(b, ',')
		}
		b = append(b, a.metricNames[j]...)
		b = a.appendMetric(b, j, v)
	}
	if r.final {
		return append(b, `},"final":true}`...)
	}
	return append(b, `},"final":false}`...)
}

func (a *aggState) appendRows(b []byte, rows []outRow, keep func(*outRow) bool) ([]byte, int) {
	b = append(b, `"rows":[`...)
	n := 0
	for i := range rows {
		if keep != nil && !keep(&rows[i]) {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = a.appendRow(b, &rows[i])
		n++
	}
	return append(b, ']'), n
}

// encodeDelta writes a delta frame with the rows and evicted panes that keep
// accepts (all when keep is nil). It returns nil when nothing is left, so a
// filtered subscriber is not sent an empty delta.
func (a *aggState) encodeDelta(seq, prev uint64, rows []outRow, evicted []paneRef, keep *filter) []byte {
	b := make([]byte, 0, 64+len(rows)*96)
	b = append(b, `{"type":"delta","epoch":`...)
	b = appendString(b, a.epoch)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"prev":`...)
	b = strconv.AppendUint(b, prev, 10)
	b = append(b, ',')
	var n int
	if keep == nil || keep.all {
		b, n = a.appendRows(b, rows, nil)
	} else {
		b, n = a.appendRows(b, rows, keep.matchRow)
	}
	ne := 0
	for _, e := range evicted {
		if keep != nil && !keep.window(e.win) {
			continue
		}
		if ne == 0 {
			b = append(b, `,"evicted":[`...)
		} else {
			b = append(b, ',')
		}
		b = append(b, `{"window":`...)
		b = append(b, a.wins[e.win].nameJSON...)
		b = append(b, `,"start":`...)
		b = appendInt(b, e.start)
		b = append(b, '}')
		ne++
	}
	if n == 0 && ne == 0 {
		return nil
	}
	if ne > 0 {
		b = append(b, ']')
	}
	return append(b, '}')
}

// encodeSnapshot writes a snapshot frame; rows are already filtered.
func (a *aggState) encodeSnapshot(seq uint64, rows []outRow) []byte {
	b := make([]byte, 0, 256+len(a.infoJSON)+len(rows)*96)
	b = append(b, `{"type":"snapshot","aggregator":`...)
	b = appendString(b, a.name)
	b = append(b, `,"epoch":`...)
	b = appendString(b, a.epoch)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ',')
	b = append(b, a.infoJSON...)
	b = append(b, ',')
	b, _ = a.appendRows(b, rows, nil)
	return append(b, '}')
}

func (a *aggState) encodeResumed(seq uint64) []byte {
	b := []byte(`{"type":"resumed","aggregator":`)
	b = appendString(b, a.name)
	b = append(b, `,"epoch":`...)
	b = appendString(b, a.epoch)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '}')
}

func encodeError(e *protoError) []byte {
	b := []byte(`{"type":"error","code":`)
	b = appendString(b, e.code)
	b = append(b, `,"message":`...)
	b = appendString(b, e.msg)
	return append(b, '}')
}

var pongFrame = []byte(`{"type":"pong"}`)
