package sink

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/wagg/wagg/abi"
)

// Stored is one partition's row as the table holds it.
type Stored struct {
	Partition  int32
	Version    int64     // the source offset the row is current to
	InsertedAt time.Time // when its checkpoint's save reached ClickHouse
	Row        abi.Row
}

// Latest reads the newest version of every row of the global windows and
// of the other windows' panes that start at or after since: the state the
// last checkpoint of each partition left, from which a host's hub starts.
// Window starts come back at ClickHouse's second precision.
func (t *Table) Latest(ctx context.Context, since time.Time) ([]Stored, error) {
	cols := []string{"`window_name`", "toInt64(toUInt32(`window_start`))"}
	for _, k := range t.schema.Keys {
		cols = append(cols, Quote(k.Name))
	}
	cols = append(cols, "`source_partition`")
	for _, m := range t.schema.Metrics {
		cols = append(cols, Quote(m.Name))
	}
	cols = append(cols, "`is_final`", "`version`", "toInt64(toUInt32(`inserted_at`))")
	var global []string
	for _, w := range t.windows {
		if w.Kind == abi.Global {
			global = append(global, "'"+strings.ReplaceAll(w.Name, "'", "")+"'")
		}
	}
	where := fmt.Sprintf("`window_start` >= toDateTime(%d)", since.Unix())
	if len(global) > 0 {
		where = fmt.Sprintf("`window_name` IN (%s) OR %s", strings.Join(global, ", "), where)
	}
	q := fmt.Sprintf("SELECT %s FROM %s FINAL WHERE %s", strings.Join(cols, ", "), t.raw, where)
	rows, err := t.conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("sink: read %s: %w", t.name, err)
	}
	defer rows.Close()
	windex := map[string]uint8{}
	for i, w := range t.windows {
		windex[w.Name] = uint8(i)
	}
	var (
		name      string
		start     int64
		part      uint32
		final     uint8
		version   uint64
		inserted  int64
		keyInts   = make([]int64, len(t.schema.Keys))
		keyFloats = make([]float64, len(t.schema.Keys))
		keyStrs   = make([]string, len(t.schema.Keys))
		mInts     = make([]int64, len(t.schema.Metrics))
		mFloats   = make([]float64, len(t.schema.Metrics))
		mEntries  = make([][]uint32, len(t.schema.Metrics))
	)
	dest := []any{&name, &start}
	for i, k := range t.schema.Keys {
		switch k.Type {
		case abi.Int64:
			dest = append(dest, &keyInts[i])
		case abi.Float64:
			dest = append(dest, &keyFloats[i])
		default:
			dest = append(dest, &keyStrs[i])
		}
	}
	dest = append(dest, &part)
	for j, m := range t.schema.Metrics {
		if m.Kind == abi.Distinct {
			dest = append(dest, &mEntries[j])
		} else if m.Type == abi.Float64 {
			dest = append(dest, &mFloats[j])
		} else {
			dest = append(dest, &mInts[j])
		}
	}
	dest = append(dest, &final, &version, &inserted)
	var out []Stored
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("sink: read %s: %w", t.name, err)
		}
		wi, ok := windex[name]
		if !ok {
			continue // a window of an earlier spec
		}
		var key []byte
		for i, k := range t.schema.Keys {
			switch k.Type {
			case abi.Int64:
				key = abi.AppendKeyInt64(key, keyInts[i])
			case abi.Float64:
				key = abi.AppendKeyFloat64(key, keyFloats[i])
			default:
				key = abi.AppendKeyString(key, []byte(keyStrs[i]))
			}
		}
		metrics := make([]uint64, len(t.schema.Metrics))
		var sketches []*abi.Sketch
		for j, m := range t.schema.Metrics {
			if m.Kind == abi.Distinct {
				sk, err := abi.SketchFromEntries(mEntries[j])
				if err != nil {
					return nil, fmt.Errorf("sink: read %s: %s: %w", t.name, m.Name, err)
				}
				if sketches == nil {
					sketches = make([]*abi.Sketch, len(t.schema.Metrics))
				}
				sketches[j], metrics[j] = sk, uint64(sk.Estimate())
				continue
			}
			if m.Type == abi.Float64 {
				metrics[j] = math.Float64bits(mFloats[j])
			} else {
				metrics[j] = uint64(mInts[j])
			}
		}
		r := abi.Row{Window: wi, Final: final == 1, Key: string(key), Metrics: metrics, Sketches: sketches}
		if t.windows[wi].Kind != abi.Global {
			r.Start = start * 1000
		}
		out = append(out, Stored{Partition: int32(part), Version: int64(version), InsertedAt: time.Unix(inserted, 0), Row: r})
	}
	return out, rows.Err()
}
