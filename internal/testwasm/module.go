package testwasm

import (
	"encoding/binary"
	"sort"

	"github.com/wagg/wagg/abi"
)

// Guest is a hand-assembled plugin for adversarial tests: every ABI export
// is present with a well-behaved default body, and a test replaces the
// bodies it wants to misbehave. Bodies are raw instruction bytes without
// locals and without the final end (Loop, Grow and the other helpers build
// the usual ones).
//
// The defaults: the input buffer is at InputPtr, every status is OK,
// wagg_describe returns Schema (a data segment at SchemaPtr), wagg_flush
// returns an empty rows buffer, wagg_snapshot an empty snapshot.
type Guest struct {
	Bodies   map[string][]byte // by export name
	Locals   map[string][]byte // local declarations by export name (raw vec)
	Schema   string            // JSON; default DefaultSchema
	MemMin   uint32            // pages, default 2
	MemMax   uint32            // pages; 0 leaves it undeclared
	Data     []Segment         // more data segments
	Imports  []Import          // function imports
	ExtraFns [][]byte          // extra (no-export) functions () -> (), bodies without end
	Tables   []Limits          // funcref tables
	Globals  int               // mutable i32 globals, never used
	Elems    int               // elements of one passive segment, each function 0
	Start    bool              // the first of ExtraFns is the module's start function
}

// Limits are the minimum and, when Max is set, the maximum of a table.
type Limits struct {
	Min uint32
	Max *uint32
}

// Segment is an active data segment at Offset.
type Segment struct {
	Offset uint32
	Bytes  []byte
}

// Import is an imported function of type Params -> Results (value type
// bytes: 0x7f i32, 0x7e i64).
type Import struct {
	Module, Name    string
	Params, Results []byte
}

// Addresses of the default data.
const (
	InputPtr  = 1024
	SchemaPtr = 256
	RowsPtr   = 128
)

// DefaultSchema counts by an int64 key.
const DefaultSchema = `{"abi":1,"input":[{"name":"poll_id","type":"int64"}],"keys":[{"name":"poll_id","type":"int64"}],"metrics":[{"name":"votes","kind":"count","type":"int64"}]}`

// Instructions and their helpers.
const (
	opUnreachable = 0x00
	opLoop        = 0x03
	opBr          = 0x0c
	opEnd         = 0x0b
	opDrop        = 0x1a
	opI32Const    = 0x41
	opI64Const    = 0x42
	opMemoryGrow  = 0x40
	opCall        = 0x10
)

// Loop is a body that never returns: (loop (br 0)).
func Loop() []byte { return []byte{opLoop, 0x40, opBr, 0x00, opEnd, opUnreachable} }

// Trap is a body that traps: unreachable.
func Trap() []byte { return []byte{opUnreachable} }

// I32 is a body that returns v.
func I32(v int32) []byte { return append([]byte{opI32Const}, sleb(int64(v))...) }

// I64 is a body that returns v.
func I64(v int64) []byte { return append([]byte{opI64Const}, sleb(v)...) }

// GrowForever is a body that grows memory by one page until the grow
// fails, then traps (memory.grow returns -1 past the cap).
func GrowForever() []byte {
	// (loop (br_if 0 (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable
	return []byte{opLoop, 0x40, opI32Const, 1, opMemoryGrow, 0, opI32Const, 0x7f, 0x47, 0x0d, 0, opEnd, opUnreachable}
}

// LoopPastWatermark is the start of a wagg_flush body that loops for ever
// when the flush's watermark is past wm, and otherwise goes on with what
// follows: a guest that passes the upload's dry run (which flushes at
// 1_700_000_001_000) and hangs in flush once records of today arrive.
func LoopPastWatermark(wm int64) []byte {
	// (if (i64.gt_s (local.get 0) (i64.const wm)) (then (loop (br 0))))
	b := []byte{0x20, 0x00, opI64Const}
	b = append(b, sleb(wm)...)
	return append(b, 0x55, 0x04, 0x40, opLoop, 0x40, opBr, 0x00, opEnd, opEnd)
}

// Packed is a body of an export that returns the region (ptr, n).
func Packed(ptr, n uint32) []byte { return I64(abi.Pack(ptr, n)) }

var sigs = map[string][2][]byte{ // params, results
	abi.VersionExport:    {nil, nil},
	abi.InitializeExport: {nil, nil},
	abi.InputExport:      {{0x7f}, {0x7f}},
	abi.InitExport:       {{0x7f}, {0x7f}},
	abi.DescribeExport:   {nil, {0x7e}},
	abi.ProcessExport:    {{0x7f}, {0x7f}},
	abi.FlushExport:      {{0x7e}, {0x7e}},
	abi.SnapshotExport:   {nil, {0x7e}},
	abi.RestoreExport:    {{0x7f}, {0x7f}},
	abi.LastErrorExport:  {nil, {0x7e}},
}

// Bytes assembles the module.
func (g Guest) Bytes() []byte {
	schema := g.Schema
	if schema == "" {
		schema = DefaultSchema
	}
	rows := make([]byte, 16)
	binary.LittleEndian.PutUint32(rows, abi.RowsMagic)
	binary.LittleEndian.PutUint64(rows[8:], 16)
	defaults := map[string][]byte{
		abi.VersionExport:    nil,
		abi.InitializeExport: nil,
		abi.InputExport:      I32(InputPtr),
		abi.InitExport:       I32(0),
		abi.DescribeExport:   Packed(SchemaPtr, uint32(len(schema))),
		abi.ProcessExport:    I32(0),
		abi.FlushExport:      Packed(RowsPtr, 16),
		abi.SnapshotExport:   I64(0),
		abi.RestoreExport:    I32(0),
		abi.LastErrorExport:  I64(0),
	}
	names := make([]string, 0, len(sigs))
	for n := range sigs {
		names = append(names, n)
	}
	sort.Strings(names)

	var types, funcs, exports, code []byte
	// type 0 is () -> (), for imports and extra functions.
	types = append(types, 0x60, 0, 0)
	ntypes := 1
	nimports := len(g.Imports)
	for i, n := range names {
		s := sigs[n]
		types = append(types, 0x60)
		types = append(types, vec(s[0])...)
		types = append(types, vec(s[1])...)
		funcs = append(funcs, uleb(uint64(ntypes))...)
		ntypes++
		exports = append(exports, str(n)...)
		exports = append(exports, 0x00)
		exports = append(exports, uleb(uint64(nimports+i))...)
		body, ok := g.Bodies[n]
		if !ok {
			body = defaults[n]
		}
		locals, ok := g.Locals[n]
		if !ok {
			locals = []byte{0}
		}
		fn := append(append([]byte{}, locals...), body...)
		fn = append(fn, opEnd)
		code = append(code, uleb(uint64(len(fn)))...)
		code = append(code, fn...)
	}
	for _, body := range g.ExtraFns {
		funcs = append(funcs, 0)
		fn := append(append([]byte{0}, body...), opEnd)
		code = append(code, uleb(uint64(len(fn)))...)
		code = append(code, fn...)
	}
	exports = append(exports, str("memory")...)
	exports = append(exports, 0x02, 0)

	var imports []byte
	for _, im := range g.Imports {
		imports = append(imports, str(im.Module)...)
		imports = append(imports, str(im.Name)...)
		if len(im.Params)+len(im.Results) == 0 {
			imports = append(imports, 0x00, 0)
			continue
		}
		types = append(types, 0x60)
		types = append(types, vec(im.Params)...)
		types = append(types, vec(im.Results)...)
		imports = append(imports, 0x00)
		imports = append(imports, uleb(uint64(ntypes))...)
		ntypes++
	}
	memMin := g.MemMin
	if memMin == 0 {
		memMin = 2
	}
	var mem []byte
	if g.MemMax > 0 {
		mem = append([]byte{1, 1}, uleb(uint64(memMin))...)
		mem = append(mem, uleb(uint64(g.MemMax))...)
	} else {
		mem = append([]byte{1, 0}, uleb(uint64(memMin))...)
	}
	segs := append([]Segment{{SchemaPtr, []byte(schema)}, {RowsPtr, rows}}, g.Data...)
	data := uleb(uint64(len(segs)))
	for _, s := range segs {
		data = append(data, 0, opI32Const)
		data = append(data, sleb(int64(int32(s.Offset)))...)
		data = append(data, opEnd)
		data = append(data, uleb(uint64(len(s.Bytes)))...)
		data = append(data, s.Bytes...)
	}

	out := []byte("\x00asm\x01\x00\x00\x00")
	out = section(out, 1, append(uleb(uint64(ntypes)), types...))
	if nimports > 0 {
		out = section(out, 2, append(uleb(uint64(nimports)), imports...))
	}
	out = section(out, 3, append(uleb(uint64(len(names)+len(g.ExtraFns))), funcs...))
	if len(g.Tables) > 0 {
		tables := uleb(uint64(len(g.Tables)))
		for _, l := range g.Tables {
			tables = append(tables, 0x70)
			if l.Max == nil {
				tables = append(append(tables, 0), uleb(uint64(l.Min))...)
				continue
			}
			tables = append(append(tables, 1), uleb(uint64(l.Min))...)
			tables = append(tables, uleb(uint64(*l.Max))...)
		}
		out = section(out, 4, tables)
	}
	out = section(out, 5, mem)
	if g.Globals > 0 {
		globals := uleb(uint64(g.Globals))
		for range g.Globals {
			globals = append(globals, 0x7f, 0x01, opI32Const, 0x00, opEnd)
		}
		out = section(out, 6, globals)
	}
	out = section(out, 7, append(uleb(uint64(len(names)+1)), exports...))
	if g.Start {
		out = section(out, 8, uleb(uint64(nimports+len(names))))
	}
	if g.Elems > 0 {
		elems := append([]byte{1, 0x01, 0x00}, uleb(uint64(g.Elems))...) // passive, funcref
		elems = append(elems, make([]byte, g.Elems)...)
		out = section(out, 9, elems)
	}
	out = section(out, 10, append(uleb(uint64(len(names)+len(g.ExtraFns))), code...))
	out = section(out, 11, data)
	return out
}

// ExportIndex is the function index of an export in a module with n
// imports, for bodies that call another export.
func ExportIndex(name string, imports int) uint32 {
	names := make([]string, 0, len(sigs))
	for n := range sigs {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		if n == name {
			return uint32(imports + i)
		}
	}
	panic("no export " + name)
}

// ExtraIndex is the function index of g.ExtraFns[k] in a module with n
// imports.
func ExtraIndex(k, imports int) uint32 { return uint32(imports + len(sigs) + k) }

func section(out []byte, id byte, body []byte) []byte {
	out = append(out, id)
	out = append(out, uleb(uint64(len(body)))...)
	return append(out, body...)
}

func vec(b []byte) []byte { return append(uleb(uint64(len(b))), b...) }

func str(s string) []byte { return append(uleb(uint64(len(s))), s...) }

func uleb(v uint64) []byte {
	var out []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			out = append(out, c|0x80)
			continue
		}
		return append(out, c)
	}
}

func sleb(v int64) []byte {
	var out []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(out, c)
		}
		out = append(out, c|0x80)
	}
}

// ULEB encodes v as an unsigned LEB128, for tests that assemble bodies.
func ULEB(v uint64) []byte { return uleb(v) }
