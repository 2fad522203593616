package sandbox

import (
	"errors"
	"fmt"
)

// CodeLimits bound what Compile accepts. They are checked by ScanCode on
// the module's bytes before anything is compiled, because compile time and
// compiler memory grow faster than linearly with the size of one function:
// a single 9 MB function took the compiler 13 s and 3 GB.
type CodeLimits struct {
	MaxFunctions    int // defined functions (default 100,000)
	MaxFunctionSize int // bytes of one function body (default 512 KiB)
	MaxCodeSize     int // bytes of the code section (default 24 MiB)
	MaxLocals       int // locals declared by one function (default 50,000)
	// MaxTotalLocals bounds the locals declared by all functions together
	// (default 2,000,000; a Go plugin declares about 10,000): the compiler
	// keeps about 8 bytes per declared local for as long as the module
	// lives, and declarations are counts, so 10,000 functions of 50,000
	// locals each fit in 80 KB and took 3.9 GB.
	MaxTotalLocals int
	// MaxBlocks bounds the blocks of one function, as countBlocks counts
	// them: block, loop, if, br_if, br_table targets, calls and bulk
	// instructions (default 5,000; a Go plugin has under 3,300).
	MaxBlocks int
	// MaxBlockWork bounds the sum over functions of their blocks squared
	// (default 150,000,000, about 2 s of compiling on the 2-core box for
	// six functions of 5,000 br_if or calls; a Go plugin needs about
	// 74,000,000).
	MaxBlockWork int
	// MaxTableElements caps each table of a module (default 262,144, 2 MiB
	// of the Go heap; a Go plugin has about 6,500): a larger initial size is
	// refused, and the table may not grow past it.
	MaxTableElements int
	// MaxEntries bounds the entries of each of the type, import, global,
	// export and element sections (default 100,000; the plugins of the
	// four SDKs have at most a few dozen), and MaxDataSegments the data
	// section's (default 1,000,000; a Go plugin has about 42,000). The
	// compiler keeps a structure per entry, and each instance a copy of
	// every global and a slice per data segment: 5 million globals, a 25 MB
	// upload, took the compiler 470 MB and each instance 370 MB of the Go
	// heap, outside the memory budget.
	MaxEntries      int
	MaxDataSegments int
	// MaxLoopWork bounds the sum over functions of their loops times the
	// square of their locals, parameters included (counted as the longest
	// function type's length): the compiler gives each loop header a
	// parameter per local it may see changed and resolves them in time
	// square in their number, so one function of 1,000 nested loops and
	// 50,000 locals, a 236 KB upload, compiled for more than 9 minutes.
	// Default 500,000,000 (under a second of compiling on the 2-core box;
	// the votes plugins of the four SDKs need under 1,000,000).
	MaxLoopWork int
	// MaxTypeWork bounds the sum over the type section's function types of
	// their parameters and results counted together, squared (default
	// 1,000,000, one type of 1,000; the SDKs' plugins need under 10,000):
	// the compiler takes time in the square of a type's length, so 200,000
	// parameters in one type, a 200 KB upload, took 28 s of it.
	MaxTypeWork int
}

func (l CodeLimits) withDefaults() CodeLimits {
	if l.MaxFunctions == 0 {
		l.MaxFunctions = 100_000
	}
	if l.MaxFunctionSize == 0 {
		l.MaxFunctionSize = 512 << 10
	}
	if l.MaxCodeSize == 0 {
		l.MaxCodeSize = 24 << 20
	}
	if l.MaxLocals == 0 {
		l.MaxLocals = 50_000
	}
	if l.MaxTotalLocals == 0 {
		l.MaxTotalLocals = 2_000_000
	}
	if l.MaxTypeWork == 0 {
		l.MaxTypeWork = 1_000_000
	}
	if l.MaxLoopWork == 0 {
		l.MaxLoopWork = 500_000_000
	}
	if l.MaxBlocks == 0 {
		l.MaxBlocks = 5_000
	}
	if l.MaxBlockWork == 0 {
		l.MaxBlockWork = 150_000_000
	}
	if l.MaxTableElements <= 0 || l.MaxTableElements > 1<<27 {
		l.MaxTableElements = 1 << 18
	}
	if l.MaxEntries == 0 {
		l.MaxEntries = 100_000
	}
	if l.MaxDataSegments == 0 {
		l.MaxDataSegments = 1_000_000
	}
	return l
}

// CodeStats describe a module's code section.
type CodeStats struct {
	Functions       int // function bodies
	CodeSize        int // bytes of the code section
	MaxFunctionSize int // bytes of the largest body
	MaxLocals       int // most locals declared by one body
	Locals          int // locals declared by all bodies
	TypeWork        int // the sum over function types of their length (parameters and results) squared
	LoopWork        int // the sum over bodies of their loops times the square of their locals and the longest type's length
	MaxBlocks       int // most blocks in one body (countBlocks)
	Blocks          int // block, loop and if instructions in all bodies
	BlockWork       int // the sum over bodies of blocks squared
	Imports         int // entries of the import section
	Globals         int // entries of the global section
	DataSegments    int // entries of the data section
	ElementBytes    int // bytes of the element section
}

// InstanceHeap is what one instance of the module takes on the Go heap,
// outside its linear memory and tables, at most, with a margin: measured
// with wazero 1.12, about 100 KiB for any instance (the stacks of its
// exports), and per import 40 bytes, per global about 90, per data segment
// 24 (a slice), per element 41, each element taking at least a byte of the
// section; 2 million elements took 78 MiB per instance, 99,000 imports
// 3.9 MiB. The memory budget counts it with the instance's memory cap and
// tables; for the plugins of the four SDKs it is under 2 MiB.
func (st CodeStats) InstanceHeap() uint64 {
	return 128<<10 + 48*uint64(st.Imports) + 112*uint64(st.Globals) + 32*uint64(st.DataSegments) + 48*uint64(st.ElementBytes)
}

// ScanCode reads the section headers of a WebAssembly binary, the code
// section's function sizes and local declarations, and each body's
// instructions far enough to count its blocks (the compiler's time grows
// with the square of the blocks of one function: 43k empty blocks took it
// 30 s), and checks them against l (zero fields take the defaults). Its
// work is linear in the size of the module and it allocates nothing. A malformed binary wraps ErrInvalid; a
// module over a limit wraps ErrTooLarge and ErrInvalid and names the limit.
// Anything else about the module is left to the compiler.
func ScanCode(wasm []byte, l CodeLimits) (CodeStats, error) {
	l = l.withDefaults()
	var st CodeStats
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: not a WebAssembly module wagg can compile: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	big := func(format string, a ...any) error {
		return fmt.Errorf("%w: %w: %s", ErrInvalid, ErrTooLarge, fmt.Sprintf(format, a...))
	}
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" {
		return st, bad("no \\0asm header")
	}
	if string(wasm[4:8]) != "\x01\x00\x00\x00" {
		return st, bad("version %x, want 1", wasm[4:8])
	}
	r := reader{b: wasm, off: 8}
	seenCode := false
	longestType := 0
	for r.off < len(r.b) {
		id := r.b[r.off]
		r.off++
		size, ok := r.u32()
		if !ok || int(size) > len(r.b)-r.off {
			return st, bad("section %d at byte %d: size runs past the end", id, r.off)
		}
		end := r.off + int(size)
		if vectorSection[id] {
			// Each element takes at least a byte: a larger count is a lie
			// the compiler would believe, and allocate for, first.
			v := reader{b: r.b[:end], off: r.off}
			n, ok := v.u32()
			if !ok || int64(n) > int64(end-v.off) {
				return st, bad("section %d at byte %d: count runs past the section", id, r.off)
			}
			if limit, name, setting := l.entries(id); id != 10 && int64(n) > int64(limit) { // the code section's below
				return st, big("%d entries in the %s section, the limit is %d (sandbox code limit %s)", n, name, limit, setting)
			}
			switch id {
			case 2:
				st.Imports = int(n)
			case 6:
				st.Globals = int(n)
			case 9:
				st.ElementBytes = int(size)
			case 11:
				st.DataSegments = int(n)
			}
		}
		if id == 1 {
			work, longest, err := typeWork(r.b[:end], r.off, l.MaxTypeWork)
			if errors.Is(err, errTypeWork) {
				return st, big("the function types' parameters and results, squared per type, add up to more than %d (sandbox code limit max_type_work)", l.MaxTypeWork)
			}
			if err != nil {
				return st, bad("type section: %v", err)
			}
			st.TypeWork, longestType = work, longest
		}
		if id != 10 {
			r.off = end
			continue
		}
		if seenCode {
			return st, bad("two code sections")
		}
		seenCode = true
		st.CodeSize = int(size)
		if st.CodeSize > l.MaxCodeSize {
			return st, big("code section is %d bytes, the limit is %d (sandbox code limit max_code_size)", st.CodeSize, l.MaxCodeSize)
		}
		body := reader{b: r.b[:end], off: r.off}
		n, ok := body.u32()
		if !ok {
			return st, bad("code section: function count")
		}
		if int64(n) > int64(l.MaxFunctions) {
			return st, big("%d functions, the limit is %d (sandbox code limit max_functions)", n, l.MaxFunctions)
		}
		st.Functions = int(n)
		for i := 0; i < st.Functions; i++ {
			fsize, ok := body.u32()
			if !ok || int(fsize) > len(body.b)-body.off {
				return st, bad("function %d: size runs past the code section", i)
			}
			if int(fsize) > l.MaxFunctionSize {
				return st, big("function %d is %d bytes, the limit is %d (sandbox code limit max_function_size)", i, fsize, l.MaxFunctionSize)
			}
			st.MaxFunctionSize = max(st.MaxFunctionSize, int(fsize))
			fend := body.off + int(fsize)
			locals := reader{b: body.b[:fend], off: body.off}
			groups, ok := locals.u32()
			if !ok {
				return st, bad("function %d: local declarations", i)
			}
			var total uint64
			for g := uint32(0); g < groups; g++ {
				count, ok := locals.u32()
				if !ok || locals.off >= len(locals.b) {
					return st, bad("function %d: local declaration %d", i, g)
				}
				locals.off++ // the value type
				total += uint64(count)
				if total > uint64(l.MaxLocals) {
					return st, big("function %d declares more than %d locals (sandbox code limit max_locals)", i, l.MaxLocals)
				}
			}
			st.MaxLocals = max(st.MaxLocals, int(total))
			if st.Locals += int(total); st.Locals > l.MaxTotalLocals {
				return st, big("the functions declare more than %d locals together (sandbox code limit max_total_locals)", l.MaxTotalLocals)
			}
			blocks, loops, err := countBlocks(locals.b[locals.off:], l.MaxBlocks)
			if errors.Is(err, errBlocks) {
				return st, big("function %d has more than %d blocks (sandbox code limit max_blocks)", i, l.MaxBlocks)
			}
			if err != nil {
				return st, bad("function %d: %v", i, err)
			}
			width := int(total) + longestType
			if st.LoopWork += loops * width * width; st.LoopWork > l.MaxLoopWork {
				return st, big("the functions' loops times the square of their locals add up to more than %d (sandbox code limit max_loop_work): fewer locals in functions with loops, or fewer loops", l.MaxLoopWork)
			}
			st.MaxBlocks = max(st.MaxBlocks, blocks)
			st.Blocks += blocks
			st.BlockWork += blocks * blocks
			if st.BlockWork > l.MaxBlockWork {
				return st, big("the functions' blocks squared add up to more than %d (sandbox code limit max_block_work): split large functions or shrink the module", l.MaxBlockWork)
			}
			body.off = fend
		}
		if body.off != end {
			return st, bad("code section: %d bytes after the last function", end-body.off)
		}
		r.off = end
	}
	return st, nil
}

var errTypeWork = errors.New("type work")

// typeWork sums over the function types of the type section at b[off:]
// the square of their length (parameters and results), up to limit
// (errTypeWork past it), and finds the longest. Types of other forms (WebAssembly 2.0 has none)
// are left to the compiler.
func typeWork(b []byte, off, limit int) (work, longest int, err error) {
	r := reader{b: b, off: off}
	n, ok := r.u32()
	if !ok {
		return 0, 0, errors.New("count")
	}
	for i := uint32(0); i < n; i++ {
		if r.off >= len(r.b) || r.b[r.off] != 0x60 {
			return work, longest, nil
		}
		r.off++
		length := 0
		for range 2 { // parameters, then results: one byte each
			k, ok := r.u32()
			if !ok || int64(k) > int64(len(r.b)-r.off) {
				return 0, 0, fmt.Errorf("type %d runs past the section", i)
			}
			r.off += int(k)
			length += int(k)
		}
		longest = max(longest, length)
		if work += length * length; work > limit {
			return work, longest, errTypeWork
		}
	}
	return work, longest, nil
}

// entries is the limit of the entries of vector section id, the section's
// name and the limit's.
func (l CodeLimits) entries(id byte) (int, string, string) {
	switch id {
	case 3:
		return l.MaxFunctions, sectionNames[id], "max_functions"
	case 11:
		return l.MaxDataSegments, sectionNames[id], "max_data_segments"
	}
	return l.MaxEntries, sectionNames[id], "max_entries"
}

var sectionNames = map[byte]string{1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global", 7: "export", 9: "element", 10: "code", 11: "data"}

// vectorSection marks the sections that are a vector of elements: type,
// import, function, table, memory, global, export, element, code and data.
var vectorSection = map[byte]bool{1: true, 2: true, 3: true, 4: true, 5: true, 6: true, 7: true, 9: true, 10: true, 11: true}

type reader struct {
	b   []byte
	off int
}

// u32 reads an unsigned LEB128 of at most 5 bytes.
func (r *reader) u32() (uint32, bool) {
	var v uint32
	for i := 0; i < 5; i++ {
		if r.off >= len(r.b) {
			return 0, false
		}
		c := r.b[r.off]
		r.off++
		if i == 4 && c > 0x0f {
			return 0, false
		}
		v |= uint32(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, true
		}
	}
	return 0, false
}

var errBlocks = errors.New("too many blocks")

// countBlocks walks the instructions of a function body and counts what
// makes the compiler's blocks and their edges, stopping with errBlocks past
// limit: block, loop and if; br_if, which ends a block; each target of a
// br_table, an edge into a block whose predecessors the compiler keeps in a
// list it scans; and call, call_indirect and the bulk instructions, after or
// before which the meter may add a check (an if). The compiler's time grows
// with the square of them: one function of 100,000 br_if, a 400 KB upload,
// compiled for 6 minutes, a br_table of 500,000 targets for 94 s, 40,000
// calls for 81 s, and 4,900 memory.fill of a length in a local for 2 s
// (they count 4 each).
func countBlocks(code []byte, limit int) (blocks, loops int, err error) {
	for off := 0; off < len(code); {
		in, err := decodeInstr(code, off)
		if err != nil {
			return blocks, loops, err
		}
		switch {
		case isBulk(in): // the meter's check, and the instruction's own loop
			blocks += 4
		case in.op == opBlock || in.op == opIf || in.op == opBrIf || in.op == opCall || in.op == opCallIndirect:
			blocks++
		case in.op == opLoop:
			blocks++
			loops++
		case in.op == opBrTable:
			blocks += int(in.index) + 1
		}
		if blocks > limit {
			return blocks, loops, errBlocks
		}
		off = in.end
	}
	return blocks, loops, nil
}

// Opcodes the scanner and the meter look at.
const (
	opBlock        = 0x02
	opLoop         = 0x03
	opIf           = 0x04
	opEnd          = 0x0b
	opBr           = 0x0c
	opBrIf         = 0x0d
	opBrTable      = 0x0e
	opReturn       = 0x0f
	opCall         = 0x10
	opCallIndirect = 0x11
	opGlobalGet    = 0x23
	opGlobalSet    = 0x24
	opI32Const     = 0x41
	opI32LtS       = 0x48
	opI32Sub       = 0x6b
	opRefFunc      = 0xd2
	blockTypeNil   = 0x40
)

// instr is one decoded instruction: its opcode, where it ends, and for the
// instructions that name a function (call, ref.func) or a global
// (global.get, global.set) that index and where its LEB128 lies; for
// i32.const, its value.
type instr struct {
	op            byte
	sub           uint32 // of a 0xfc or 0xfd instruction
	end           int
	index         uint32
	idxAt, idxEnd int // the index's bytes; idxAt == 0 when there is none
}

// decodeInstr decodes the instruction at code[off:] (WebAssembly 2.0: the
// features wazero enables by default). It checks only what it needs to stay
// in step; the compiler validates the rest.
func decodeInstr(code []byte, off int) (instr, error) {
	r := reader{b: code, off: off}
	op := code[off]
	r.off++
	in := instr{op: op}
	skip := func(n int) bool {
		for range n {
			if _, ok := r.leb(); !ok {
				return false
			}
		}
		return true
	}
	fixed := func(n int) bool {
		if len(r.b)-r.off < n {
			return false
		}
		r.off += n
		return true
	}
	ok := true
	switch {
	case op == opBlock || op == opLoop || op == opIf:
		ok = r.off < len(r.b)
		if ok {
			switch t := r.b[r.off]; t {
			case blockTypeNil, 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
				r.off++
			default: // a type index, as a signed LEB
				_, ok = r.leb()
			}
		}
	case op == 0x00 || op == 0x01 || op == 0x05 || op == opEnd || op == 0x0f ||
		op == 0x1a || op == 0x1b || (op >= 0x45 && op <= 0xc4) || op == 0xd1:
	case op == opCall || op == opRefFunc || op == opGlobalGet || op == opGlobalSet:
		in.idxAt = r.off
		in.index, ok = r.u32()
		in.idxEnd = r.off
	case op == 0x0c || op == 0x0d || // br, br_if
		(op >= 0x20 && op <= 0x26) || // locals, table.get/set
		op == 0x3f || op == 0x40: // memory.size, memory.grow
		ok = skip(1)
	case op == 0x0e: // br_table: index is the count of targets
		in.index, ok = r.u32()
		ok = ok && int64(in.index) < int64(len(r.b)) && skip(int(in.index)+1)
	case op == 0x11: // call_indirect
		ok = skip(2)
	case op == 0x1c: // typed select
		var n uint32
		n, ok = r.u32()
		ok = ok && fixed(int(n))
	case op >= 0x28 && op <= 0x3e: // loads and stores: memarg
		ok = skip(2)
	case op == opI32Const:
		in.index, ok = r.s32()
	case op == 0x42: // i64.const
		ok = skip(1)
	case op == 0x43:
		ok = fixed(4)
	case op == 0x44:
		ok = fixed(8)
	case op == 0xd0: // ref.null
		ok = fixed(1)
	case op == 0xfc:
		var sub uint32
		sub, ok = r.u32()
		in.sub = sub
		switch {
		case !ok:
		case sub <= 7:
		case sub == 9 || sub == 11 || sub == 13 || sub == 15 || sub == 16 || sub == 17:
			ok = skip(1)
		case sub == 8 || sub == 10 || sub == 12 || sub == 14:
			ok = skip(2)
		default:
			return in, fmt.Errorf("unknown instruction 0xfc %d at byte %d", sub, off)
		}
	case op == 0xfd:
		var sub uint32
		sub, ok = r.u32()
		switch {
		case !ok:
		case sub <= 11 || sub == 92 || sub == 93: // loads, store, load zero
			ok = skip(2)
		case sub == 12 || sub == 13: // v128.const, i8x16.shuffle
			ok = fixed(16)
		case sub >= 21 && sub <= 34: // extract/replace lane
			ok = fixed(1)
		case sub >= 84 && sub <= 91: // load/store lane
			ok = skip(2) && fixed(1)
		case sub <= 255:
		default:
			return in, fmt.Errorf("unknown instruction 0xfd %d at byte %d", sub, off)
		}
	default:
		return in, fmt.Errorf("unknown instruction 0x%02x at byte %d", op, off)
	}
	if !ok {
		return in, fmt.Errorf("instruction 0x%02x at byte %d runs past the end of the body", op, off)
	}
	in.end = r.off
	return in, nil
}

// s32 reads a signed LEB128 of at most 5 bytes, as the bits of an i32.
func (r *reader) s32() (uint32, bool) {
	var v int64
	shift := 0
	for i := 0; i < 5; i++ {
		if r.off >= len(r.b) {
			return 0, false
		}
		c := r.b[r.off]
		r.off++
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if c&0x40 != 0 && shift < 64 {
				v |= -1 << shift
			}
			return uint32(v), true
		}
	}
	return 0, false
}

// leb skips one LEB128 of at most 10 bytes (any width, signed or not).
func (r *reader) leb() (struct{}, bool) {
	for i := 0; i < 10; i++ {
		if r.off >= len(r.b) {
			return struct{}{}, false
		}
		c := r.b[r.off]
		r.off++
		if c&0x80 == 0 {
			return struct{}{}, true
		}
	}
	return struct{}{}, false
}
