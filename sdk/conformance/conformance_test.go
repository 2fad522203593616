package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/testwasm"
)

var update = flag.Bool("update", false, "rewrite the vectors' outputs from the Go build")

// A Vector is one deployment of one aggregator and the calls made on it.
type Vector struct {
	About      string       `json:"about"`
	Aggregator string       `json:"aggregator"` // a key of aggregators
	Windows    []abi.Window `json:"windows"`
	MaxGroups  int          `json:"max_groups,omitempty"` // abi.Config.MaxGroups
	// MigrateFrom is the schema of an older build whose snapshots the
	// vector's restore_hex steps hold (abi.Config.MigrateFrom); a restart
	// restores the aggregator's own snapshot, without it.
	MigrateFrom *abi.Schema `json:"migrate_from,omitempty"`
	// InitCode is the status wagg_init must answer; a vector whose init
	// fails has no steps.
	InitCode abi.Code `json:"init_code,omitempty"`
	Steps    []Step   `json:"steps,omitempty"`
}

// A Step is one call; its inputs are set by hand, its outputs by -update.
type Step struct {
	// One of:
	Process    [][]json.RawMessage `json:"process,omitempty"`     // records: [ts, fields in declared order...]
	ProcessHex string              `json:"process_hex,omitempty"` // a batch as raw bytes
	Flush      *int64              `json:"flush,omitempty"`       // a watermark
	Snapshot   bool                `json:"snapshot,omitempty"`    // take a snapshot and keep it
	Restart    bool                `json:"restart,omitempty"`     // a fresh instance, restored from the kept snapshot
	RestoreHex string              `json:"restore_hex,omitempty"` // restore these bytes

	// Outputs.
	Code        abi.Code `json:"code,omitempty"`         // status of process, restore or restart
	Rows        []string `json:"rows,omitempty"`         // a flush's rows, sorted (rowText)
	SnapshotHex string   `json:"snapshot_hex,omitempty"` // the kept snapshot
}

// aggregators are the builds of each conformance aggregator, per SDK.
var aggregators = map[string]map[string]func(testing.TB) []byte{
	"votes": {
		"go":   func(tb testing.TB) []byte { return testwasm.Build(tb, "examples/votes") },
		"c":    func(tb testing.TB) []byte { return testwasm.BuildC(tb, "examples/votes/c/votes.c") },
		"rust": func(tb testing.TB) []byte { return testwasm.BuildRust(tb, "examples/votes/rust") },
		"as":   func(tb testing.TB) []byte { return testwasm.BuildAS(tb, "examples/votes/assemblyscript/votes.ts") },
	},
	// tenths migrates the snapshots of state version 1 (votes per poll).
	"tenths": {
		"go":   func(tb testing.TB) []byte { return testwasm.Build(tb, "internal/testwasm/statev2migrate") },
		"c":    func(tb testing.TB) []byte { return testwasm.BuildC(tb, "internal/testwasm/statev2migrate/c/tenths.c") },
		"rust": func(tb testing.TB) []byte { return testwasm.BuildRust(tb, "internal/testwasm/statev2migrate/rust") },
		"as": func(tb testing.TB) []byte {
			return testwasm.BuildAS(tb, "internal/testwasm/statev2migrate/assemblyscript/tenths.ts")
		},
	},
	// voters2 migrates the snapshots of state version 1 whose groups hold
	// distinct metrics.
	"voters2": {
		"go":   func(tb testing.TB) []byte { return testwasm.Build(tb, "internal/testwasm/distinctmigrate") },
		"c":    func(tb testing.TB) []byte { return testwasm.BuildC(tb, "internal/testwasm/distinctmigrate/c/voters.c") },
		"rust": func(tb testing.TB) []byte { return testwasm.BuildRust(tb, "internal/testwasm/distinctmigrate/rust") },
		"as": func(tb testing.TB) []byte {
			return testwasm.BuildAS(tb, "internal/testwasm/distinctmigrate/assemblyscript/voters.ts")
		},
	},
	"uniquevoters": {
		"go":   func(tb testing.TB) []byte { return testwasm.Build(tb, "examples/uniquevoters") },
		"c":    func(tb testing.TB) []byte { return testwasm.BuildC(tb, "examples/uniquevoters/c/uniquevoters.c") },
		"rust": func(tb testing.TB) []byte { return testwasm.BuildRust(tb, "examples/uniquevoters/rust") },
		"as": func(tb testing.TB) []byte {
			return testwasm.BuildAS(tb, "examples/uniquevoters/assemblyscript/uniquevoters.ts")
		},
	},
	"stats": {
		"go":   func(tb testing.TB) []byte { return testwasm.Build(tb, "sdk/conformance/stats") },
		"c":    func(tb testing.TB) []byte { return testwasm.BuildC(tb, "sdk/conformance/stats/c/stats.c") },
		"rust": func(tb testing.TB) []byte { return testwasm.BuildRust(tb, "sdk/conformance/stats/rust") },
		"as": func(tb testing.TB) []byte {
			return testwasm.BuildAS(tb, "sdk/conformance/stats/assemblyscript/stats.ts")
		},
	},
}

var sdks = []string{"go", "c", "rust", "as"}

func loadVectors(t *testing.T) map[string]*Vector {
	files, err := filepath.Glob("vectors/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	out := map[string]*Vector{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		v := &Vector{}
		if err := d.Decode(v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if aggregators[v.Aggregator] == nil {
			t.Fatalf("%s: unknown aggregator %q", f, v.Aggregator)
		}
		out[f] = v
	}
	return out
}

// TestVectors runs every vector against every SDK's build. With -update it
// first rewrites the outputs from the Go build.
func TestVectors(t *testing.T) {
	ctx := context.Background()
	rt, err := sandbox.New(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	vectors := loadVectors(t)
	if *update {
		for f, v := range vectors {
			m := compile(t, rt, aggregators[v.Aggregator]["go"](t))
			got := run(t, ctx, m, v)
			out, _ := json.MarshalIndent(got, "", "  ")
			if err := os.WriteFile(f, append(out, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		vectors = loadVectors(t)
	}
	schemas := map[string]abi.Schema{}
	for _, sdk := range sdks {
		t.Run(sdk, func(t *testing.T) {
			modules := map[string]*sandbox.Module{} // compiled once per aggregator
			for _, f := range sortedKeys(vectors) {
				v := vectors[f]
				t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
					m := modules[v.Aggregator]
					if m == nil {
						m = compile(t, rt, aggregators[v.Aggregator][sdk](t))
						modules[v.Aggregator] = m
					}
					if want, ok := schemas[v.Aggregator]; !ok {
						schemas[v.Aggregator] = m.Schema
					} else if !sameSchema(m.Schema, want) {
						t.Fatalf("describes itself as %+v, the %s build as %+v", m.Schema, sdks[0], want)
					}
					got := run(t, ctx, m, v)
					for i := range v.Steps {
						w, g := v.Steps[i], got.Steps[i]
						if w.Code != g.Code || w.SnapshotHex != g.SnapshotHex || !slices.Equal(w.Rows, g.Rows) {
							t.Errorf("step %d %s:\n got  code %d rows %q snapshot %s\n want code %d rows %q snapshot %s",
								i, describe(w), g.Code, g.Rows, g.SnapshotHex, w.Code, w.Rows, w.SnapshotHex)
						}
					}
					if got.InitCode != v.InitCode {
						t.Errorf("init: code %d, want %d", got.InitCode, v.InitCode)
					}
				})
			}
		})
	}
}

func compile(t testing.TB, rt *sandbox.Runtime, wasm []byte) *sandbox.Module {
	t.Helper()
	m, err := rt.Compile(context.Background(), wasm)
	if err != nil {
		t.Fatal(err)
	}
	return m // closed with the runtime
}

// run makes the vector's calls on m and returns the vector with the
// outputs it observed.
func run(t *testing.T, ctx context.Context, m *sandbox.Module, v *Vector) *Vector {
	t.Helper()
	out := *v
	out.Steps = slices.Clone(v.Steps)
	cfg := abi.Config{Windows: v.Windows, MaxGroups: v.MaxGroups}
	first := cfg
	first.MigrateFrom = v.MigrateFrom
	inst, err := m.Instantiate(ctx, first)
	out.InitCode = code(t, err)
	if err != nil {
		return &out
	}
	defer func() { inst.Close(ctx) }()
	enc := abi.NewBatchEncoder(&m.Schema)
	var kept []byte
	for i := range out.Steps {
		s := &out.Steps[i]
		s.Code, s.Rows, s.SnapshotHex = 0, nil, ""
		switch {
		case s.Process != nil:
			b, err := batch(&m.Schema, s.Process)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			buf, err := enc.Encode(b)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			s.Code = code(t, inst.Process(ctx, buf))
		case s.ProcessHex != "":
			s.Code = code(t, inst.Process(ctx, unhex(t, s.ProcessHex)))
		case s.Flush != nil:
			rows, err := inst.Flush(ctx, *s.Flush, nil)
			if err != nil {
				t.Fatalf("step %d: flush: %v", i, err)
			}
			for _, r := range rows {
				s.Rows = append(s.Rows, rowText(&m.Schema, r))
			}
			slices.Sort(s.Rows)
		case s.Snapshot:
			kept, err = inst.Snapshot(ctx)
			if err != nil {
				t.Fatalf("step %d: snapshot: %v", i, err)
			}
			s.SnapshotHex = hex.EncodeToString(kept)
		case s.Restart:
			inst.Close(ctx)
			if inst, err = m.Instantiate(ctx, cfg); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if kept != nil {
				s.Code = code(t, inst.Restore(ctx, kept))
			}
		case s.RestoreHex != "":
			s.Code = code(t, inst.Restore(ctx, unhex(t, s.RestoreHex)))
		default:
			t.Fatalf("step %d does nothing", i)
		}
	}
	return &out
}

// code is the status a call answered; a trap fails the test.
func code(t *testing.T, err error) abi.Code {
	t.Helper()
	if err == nil {
		return abi.OK
	}
	var g *sandbox.GuestError
	if !errors.As(err, &g) || g.Code == abi.OK {
		t.Fatalf("not a status: %v", err)
	}
	return g.Code
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// batch builds a decoded batch from records of [ts, field values...].
func batch(s *abi.Schema, recs [][]json.RawMessage) (*abi.Batch, error) {
	b := &abi.Batch{Columns: make([]abi.BatchColumn, len(s.Input))}
	for i, f := range s.Input {
		if f.Type == abi.String {
			b.Columns[i].Offsets = []uint32{0}
		}
	}
	for _, r := range recs {
		if len(r) != 1+len(s.Input) {
			return nil, fmt.Errorf("record %v: want ts and %d fields", r, len(s.Input))
		}
		ts, err := strconv.ParseInt(string(r[0]), 10, 64)
		if err != nil {
			return nil, err
		}
		b.Times = append(b.Times, ts)
		for i, f := range s.Input {
			c, v := &b.Columns[i], string(r[1+i])
			switch f.Type {
			case abi.Int64:
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return nil, err
				}
				c.Ints = append(c.Ints, n)
			case abi.Float64:
				x, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return nil, err
				}
				c.Floats = append(c.Floats, x)
			case abi.String:
				var str string
				if err := json.Unmarshal(r[1+i], &str); err != nil {
					return nil, fmt.Errorf("string field %s: %v", f.Name, err)
				}
				c.Data = append(c.Data, str...)
				c.Offsets = append(c.Offsets, uint32(len(c.Data)))
			}
		}
	}
	return b, nil
}

// rowText renders a row as "window start final|open [key] [metrics]"; a
// distinct metric as "estimate#digest of its sketch".
func rowText(s *abi.Schema, r abi.Row) string {
	kv, err := s.KeyValues(r.Key)
	if err != nil {
		return "bad key: " + err.Error()
	}
	val := func(v any) string {
		switch x := v.(type) {
		case string:
			return strconv.Quote(x)
		case float64:
			if x == 0 && math.Signbit(x) {
				return "-0"
			}
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
		return fmt.Sprint(v)
	}
	var keys, metrics []string
	for _, v := range kv {
		keys = append(keys, val(v))
	}
	for j, bits := range r.Metrics {
		m := val(s.MetricValue(j, bits))
		if r.Sketches != nil && r.Sketches[j] != nil {
			// A distinct count: its estimate and a digest of its sketch, so
			// that equal rows mean equal registers.
			sum := sha256.Sum256(r.Sketches[j].AppendEncoded(nil))
			m += "#" + hex.EncodeToString(sum[:4])
		}
		metrics = append(metrics, m)
	}
	state := "open"
	if r.Final {
		state = "final"
	}
	return fmt.Sprintf("%d %d %s [%s] [%s]", r.Window, r.Start, state, strings.Join(keys, ","), strings.Join(metrics, ","))
}

func describe(s Step) string {
	switch {
	case s.Process != nil:
		return fmt.Sprintf("process %d records", len(s.Process))
	case s.ProcessHex != "":
		return "process bytes"
	case s.Flush != nil:
		return fmt.Sprintf("flush %d", *s.Flush)
	case s.Snapshot:
		return "snapshot"
	case s.Restart:
		return "restart from the snapshot"
	}
	return "restore bytes"
}

// sameSchema compares schemas, an empty list equal to none.
func sameSchema(a, b abi.Schema) bool {
	norm := func(s abi.Schema) abi.Schema {
		if len(s.Input) == 0 {
			s.Input = nil
		}
		if len(s.Keys) == 0 {
			s.Keys = nil
		}
		return s
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
