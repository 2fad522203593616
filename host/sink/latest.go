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
	rows, err := t.conn.Query(ctx, t.latestQuery(since))
	if err != nil {
		return nil, fmt.Errorf("sink: read %s: %w", t.name, err)
	}
	defer rows.Close()
	sc := t.newScanned()
	dest := sc.dest()
	var out []Stored
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("sink: read %s: %w", t.name, err)
		}
		s, ok, err := sc.stored()
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, s)
		}
	}
	return out, rows.Err()
}

// latestQuery is the SELECT of Latest; its columns are those of scanned.
func (t *Table) latestQuery(since time.Time) string {
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
	return fmt.Sprintf("SELECT %s FROM %s FINAL WHERE %s", strings.Join(cols, ", "), t.raw, where)
}

// scanned is one row of latestQuery as scanned, typed by the schema.
type scanned struct {
	t         *Table
	windex    map[string]uint8
	name      string
	start     int64 // Unix seconds
	part      uint32
	final     uint8
	version   uint64
	inserted  int64 // Unix seconds
	keyInts   []int64
	keyFloats []float64
	keyStrs   []string
	mInts     []int64
	mFloats   []float64
	mEntries  [][]uint32 // a distinct metric's sketch, abi.Sketch.Entries
}

func (t *Table) newScanned() *scanned {
	sc := &scanned{
		t:         t,
		windex:    map[string]uint8{},
		keyInts:   make([]int64, len(t.schema.Keys)),
		keyFloats: make([]float64, len(t.schema.Keys)),
		keyStrs:   make([]string, len(t.schema.Keys)),
		mInts:     make([]int64, len(t.schema.Metrics)),
		mFloats:   make([]float64, len(t.schema.Metrics)),
		mEntries:  make([][]uint32, len(t.schema.Metrics)),
	}
	for i, w := range t.windows {
		sc.windex[w.Name] = uint8(i)
	}
	return sc
}

// dest are the Scan destinations of latestQuery's columns.
func (sc *scanned) dest() []any {
	s := sc.t.schema
	dest := []any{&sc.name, &sc.start}
	for i, k := range s.Keys {
		switch k.Type {
		case abi.Int64:
			dest = append(dest, &sc.keyInts[i])
		case abi.Float64:
			dest = append(dest, &sc.keyFloats[i])
		default:
			dest = append(dest, &sc.keyStrs[i])
		}
	}
	dest = append(dest, &sc.part)
	for j, m := range s.Metrics {
		if m.Kind == abi.Distinct {
			dest = append(dest, &sc.mEntries[j])
		} else if m.Type == abi.Float64 {
			dest = append(dest, &sc.mFloats[j])
		} else {
			dest = append(dest, &sc.mInts[j])
		}
	}
	return append(dest, &sc.final, &sc.version, &sc.inserted)
}

// stored makes the scanned row the row Write wrote; false for a row of a
// window the deployment no longer has (one of an earlier spec). A sketch
// that does not decode is an error.
func (sc *scanned) stored() (Stored, bool, error) {
	s := sc.t.schema
	wi, ok := sc.windex[sc.name]
	if !ok {
		return Stored{}, false, nil
	}
	var key []byte
	for i, k := range s.Keys {
		switch k.Type {
		case abi.Int64:
			key = abi.AppendKeyInt64(key, sc.keyInts[i])
		case abi.Float64:
			key = abi.AppendKeyFloat64(key, sc.keyFloats[i])
		default:
			key = abi.AppendKeyString(key, []byte(sc.keyStrs[i]))
		}
	}
	metrics := make([]uint64, len(s.Metrics))
	var sketches []*abi.Sketch
	for j, m := range s.Metrics {
		if m.Kind == abi.Distinct {
			sk, err := abi.SketchFromEntries(sc.mEntries[j])
			if err != nil {
				return Stored{}, false, fmt.Errorf("sink: read %s: %s: %w", sc.t.name, m.Name, err)
			}
			if sketches == nil {
				sketches = make([]*abi.Sketch, len(s.Metrics))
			}
			sketches[j], metrics[j] = sk, uint64(sk.Estimate())
			continue
		}
		if m.Type == abi.Float64 {
			metrics[j] = math.Float64bits(sc.mFloats[j])
		} else {
			metrics[j] = uint64(sc.mInts[j])
		}
	}
	r := abi.Row{Window: wi, Final: sc.final == 1, Key: string(key), Metrics: metrics, Sketches: sketches}
	if sc.t.windows[wi].Kind != abi.Global {
		r.Start = sc.start * 1000
	}
	return Stored{Partition: int32(sc.part), Version: int64(sc.version), InsertedAt: time.Unix(sc.inserted, 0), Row: r}, true, nil
}
