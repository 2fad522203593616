package sandbox

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// The meter is how a guest call is held to its deadline without costing
// the guest's speed (RATIONALE.md, "Every guest call has a deadline").
//
// Compile rewrites a module before compiling it: it adds a mutable i32
// global, the fuel, and a function import, wagg_sandbox.refuel. Every
// function entry and every loop header subtracts from the fuel what the code
// it starts can run before it reaches the next such point: one unit, plus
// one per fuelBytes bytes of the function or loop body (a function whose
// first loop header comes before any branch or call has that header check
// for its entry). Bulk instructions are charged by their length, and a call
// followed by a long tail is checked again when it returns (see body). When
// the fuel runs out the guest calls refuel, which is the only place it
// returns to Go besides the WASI calls (checked as they return: hostCalls):
// it checks the call's deadline (the CPU time the call has used: a busy box
// must not stop a healthy guest) and its context, and hands out
// fuelPerRefill more units. Between two refuels a guest runs a bounded
// amount of code, so a looping guest comes back to Go within about two
// milliseconds, where the Go scheduler can stop it for a garbage collection,
// and is stopped within that time of its deadline.
//
// Without instrumentation the guest could not be preempted at all (the Go
// runtime cannot stop a goroutine inside compiled guest code, so the next
// stop-the-world waits for it), and wazero's own remedy, close-on-context-
// done, returns to Go at every loop header, which made the votes plugin 3-5
// times slower.
const (
	meterModule   = "wagg_sandbox"
	meterFunc     = "refuel"
	fuelPerRefill = 1 << 20
	fuelShift     = 6 // a unit of fuel per 1<<fuelShift bytes
	fuelBytes     = 1 << fuelShift
)

// meterKey is the context key of the *callMeter of a guest call.
type meterKey struct{}

// callMeter is what refuel checks during one guest call: the CPU time the
// call may use, and the thread's CPU time when it began.
type callMeter struct {
	timeout time.Duration
	start   time.Duration
	locked  bool
}

// begin starts the meter of one call under timeout and returns ctx carrying
// it. The call runs locked to its thread, so that the thread's CPU clock
// measures the guest alone; end releases it.
func (c *callMeter) begin(ctx context.Context, timeout time.Duration) context.Context {
	runtime.LockOSThread()
	c.locked, c.timeout, c.start = true, timeout, threadTime()
	return context.WithValue(ctx, meterKey{}, c)
}

func (c *callMeter) end() {
	if c.locked {
		c.locked = false
		runtime.UnlockOSThread()
	}
}

// refuel is the host side of wagg_sandbox.refuel: it stops the call when
// it is due (see stopIfDue), and otherwise returns more fuel.
func refuel(ctx context.Context, _ api.Module, stack []uint64) {
	stopIfDue(ctx)
	stack[0] = fuelPerRefill
}

// stopIfDue stops the guest call of ctx (a panic, which wazero turns into
// the call's error) when it has used its CPU time or its context is done.
func stopIfDue(ctx context.Context) {
	if c, ok := ctx.Value(meterKey{}).(*callMeter); ok {
		if err := ctx.Err(); err != nil {
			panic(fmt.Errorf("sandbox: guest call stopped: %w", err))
		}
		if threadTime()-c.start > c.timeout {
			panic(fmt.Errorf("%w (%v of CPU time)", ErrDeadline, c.timeout))
		}
	}
}

// hostCalls checks the deadline after every call of a WASI function: the
// fuel counts guest code only, and one such call can work in proportion to
// its arguments (random_get fills megabytes, poll_oneoff walks as many
// subscriptions as memory holds), so a loop around one would otherwise run
// for hours between two refuels. A guest calls WASI rarely (a Go runtime
// reads its clock and writes its output), so the check costs nothing that
// shows. It is a function listener of the WASI host module alone: guest
// functions are compiled without listeners.
type hostCalls struct{}

func (hostCalls) NewFunctionListener(api.FunctionDefinition) experimental.FunctionListener {
	return hostCalls{}
}

func (hostCalls) Before(context.Context, api.Module, api.FunctionDefinition, []uint64, experimental.StackIterator) {
}

func (hostCalls) After(ctx context.Context, _ api.Module, _ api.FunctionDefinition, _ []uint64) {
	stopIfDue(ctx)
}

func (hostCalls) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}

var processStart = time.Now()

// wallTime is the monotonic time since the process started.
func wallTime() time.Duration { return time.Since(processStart) }

func instantiateMeter(ctx context.Context, rt wazero.Runtime) error {
	_, err := rt.NewHostModuleBuilder(meterModule).
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(refuel), nil, []api.ValueType{api.ValueTypeI32}).
		Export(meterFunc).
		Instantiate(ctx)
	return err
}

// Section ids, and the order the binary format requires of them.
const (
	secCustom = 0
	secType   = 1
	secImport = 2
	secFunc   = 3
	secTable  = 4
	secGlobal = 6
	secExport = 7
	secStart  = 8
	secElem   = 9
	secCode   = 10
	secData   = 11
)

var sectionRank = map[byte]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}

// maxTables is how many tables a module may define (a Go, C or Rust
// plugin has one).
const maxTables = 8

// instrumenter holds what the rewrite has learnt of a module so far.
type instrumenter struct {
	metered     bool   // add the meter (deadlines are on)
	maxTable    uint32 // elements one table may reach
	tableElems  uint64 // elements the module's tables may reach together
	types       uint32 // function types of the original
	funcImports uint32 // imported functions: defined functions move up one
	globals     uint32 // globals of the original, imported and defined
	fuel        uint32 // the fuel's global index
	emitted     [3]bool
	params      []uint32 // per function type, its parameters
	funcTypes   []uint32 // per defined function, its type
	loops       []int    // pass one of a body: the weight of each loop, in bytes
	loopStatic  []uint64 // pass one: what was prepaid before each loop
	stack       []int
}

// instrument returns wasm with its tables capped at maxTable elements each
// (the compiler allocates a table on the Go heap, and table.grow would grow
// it without bound), and, when meter is set, the meter added (see above).
// It also returns the elements the tables may reach together. It refuses
// what it cannot rewrite faithfully (wrapping ErrInvalid), a table past the
// cap (with ErrTooLarge), and a module that names globals past its own:
// after the rewrite such an index would reach the fuel. Everything else it
// leaves to the compiler's validation.
func instrument(wasm []byte, meter bool, maxTable uint32) ([]byte, uint64, error) {
	out, m, err := rewrite(wasm, &instrumenter{metered: meter, maxTable: maxTable})
	if err != nil {
		return nil, 0, err
	}
	return out, m.tableElems, nil
}

func rewrite(wasm []byte, m *instrumenter) ([]byte, *instrumenter, error) {
	if len(wasm) < 8 {
		return nil, nil, invalid("no header")
	}
	out := make([]byte, 0, len(wasm)+len(wasm)/8+64)
	out = append(out, wasm[:8]...)
	r := reader{b: wasm, off: 8}
	last := 0
	for r.off < len(r.b) {
		id := r.b[r.off]
		r.off++
		size, ok := r.u32()
		if !ok || int(size) > len(r.b)-r.off {
			return nil, nil, invalid("section %d: size runs past the end", id)
		}
		body := wasm[r.off : r.off+int(size)]
		r.off += int(size)
		if id != secCustom {
			rank, known := sectionRank[id]
			if !known || rank <= last {
				return nil, nil, invalid("section %d out of order or unknown", id)
			}
			last = rank
			out = m.synthesize(out, rank)
		}
		var err error
		if out, err = m.section(out, id, body); err != nil {
			return nil, nil, err
		}
	}
	return m.synthesize(out, len(sectionRank)+1), m, nil
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: not a WebAssembly module wagg can compile: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// synthesize emits the type, import and global sections the meter needs
// when the module has none and the next section must come after them.
func (m *instrumenter) synthesize(out []byte, before int) []byte {
	if !m.metered {
		return out
	}
	for k, id := range []byte{secType, secImport, secGlobal} {
		if !m.emitted[k] && sectionRank[id] < before {
			out, _ = m.section(out, id, []byte{0})
		}
	}
	return out
}

func (m *instrumenter) section(out []byte, id byte, body []byte) ([]byte, error) {
	var content []byte
	var err error
	switch {
	case id == secTable:
		content, err = m.tableSection(body)
	case !m.metered:
		content = body
	case id == secType:
		m.emitted[0] = true
		content, err = m.typeSection(body)
	case id == secFunc:
		content, err = body, m.funcSection(body)
	case id == secImport:
		m.emitted[1] = true
		content, err = m.importSection(body)
	case id == secGlobal:
		m.emitted[2] = true
		content, err = m.globalSection(body)
	case id == secExport:
		content, err = m.exportSection(body)
	case id == secStart:
		content, err = m.startSection(body)
	case id == secElem:
		content, err = m.elemSection(body)
	case id == secCode:
		content, err = m.codeSection(body)
	case id == secData:
		content, err = body, m.dataSection(body)
	case id == secCustom:
		content = m.customSection(body)
		if content == nil {
			return out, nil
		}
	default:
		content = body
	}
	if err != nil {
		return nil, err
	}
	out = append(out, id)
	out = appendULEB(out, uint32(len(content)))
	return append(out, content...), nil
}

// vector reads the count of a vector section and returns a reader at its
// first element.
func vector(body []byte, what string) (reader, uint32, error) {
	r := reader{b: body}
	n, ok := r.u32()
	if !ok {
		return r, 0, invalid("%s section: count", what)
	}
	return r, n, nil
}

func (m *instrumenter) tableSection(body []byte) ([]byte, error) {
	r, n, err := vector(body, "table")
	if err != nil {
		return nil, err
	}
	if n > maxTables {
		return nil, fmt.Errorf("%w: %w: %d tables, the limit is %d", ErrInvalid, ErrTooLarge, n, maxTables)
	}
	out := appendULEB(nil, n)
	for i := uint32(0); i < n; i++ {
		if len(r.b)-r.off < 2 {
			return nil, invalid("table %d: type", i)
		}
		reftype, flag := r.b[r.off], r.b[r.off+1]
		r.off += 2
		low, ok := r.u32()
		high := m.maxTable
		if ok && flag == 1 {
			var declared uint32
			declared, ok = r.u32()
			high = min(high, declared)
		}
		if !ok || flag > 1 {
			return nil, invalid("table %d: limits", i)
		}
		if low > m.maxTable {
			return nil, fmt.Errorf("%w: %w: table %d starts at %d elements, the limit is %d (sandbox code limit max_table_elements)",
				ErrInvalid, ErrTooLarge, i, low, m.maxTable)
		}
		high = max(high, low)
		m.tableElems += uint64(high)
		out = append(out, reftype, 0x01)
		out = appendULEB(out, low)
		out = appendULEB(out, high)
	}
	if r.off != len(r.b) {
		return nil, invalid("table section: bytes after the last table")
	}
	return out, nil
}

func (m *instrumenter) typeSection(body []byte) ([]byte, error) {
	r, n, err := vector(body, "type")
	if err != nil {
		return nil, err
	}
	first := r.off
	for i := uint32(0); i < n; i++ {
		// 0x60, then parameter and result types of one byte each.
		ok := r.skipBytes(1) && r.b[r.off-1] == 0x60
		params, ok1 := r.u32()
		ok = ok && ok1 && r.skipBytes(int(params))
		results, ok2 := r.u32()
		if !ok || !ok2 || !r.skipBytes(int(results)) {
			return nil, invalid("type %d", i)
		}
		m.params = append(m.params, params)
	}
	if r.off != len(r.b) {
		return nil, invalid("type section: bytes after the last type")
	}
	m.types = n
	out := appendULEB(nil, n+1)
	out = append(out, body[first:]...)
	return append(out, 0x60, 0x00, 0x01, 0x7f), nil // () -> i32
}

func (m *instrumenter) funcSection(body []byte) error {
	r, n, err := vector(body, "function")
	if err != nil {
		return err
	}
	for i := uint32(0); i < n; i++ {
		t, ok := r.u32()
		if !ok || t >= uint32(len(m.params)) {
			return invalid("function %d: type", i)
		}
		m.funcTypes = append(m.funcTypes, t)
	}
	return nil
}

func (m *instrumenter) importSection(body []byte) ([]byte, error) {
	r, n, err := vector(body, "import")
	if err != nil {
		return nil, err
	}
	first := r.off
	for i := uint32(0); i < n; i++ {
		mod, ok1 := r.name()
		_, ok2 := r.name()
		if !ok1 || !ok2 || r.off >= len(r.b) {
			return nil, invalid("import %d: names", i)
		}
		if mod == meterModule {
			return nil, fmt.Errorf("%w: imports from %s, which is the sandbox's own", ErrInvalid, meterModule)
		}
		kind := r.b[r.off]
		r.off++
		ok := true
		switch kind {
		case 0x00: // function: type index
			_, ok = r.u32()
			m.funcImports++
		case 0x01: // table: reference type, limits
			ok = r.skipBytes(1) && r.limits()
		case 0x02: // memory: limits
			ok = r.limits()
		case 0x03: // global: value type, mutability
			ok = r.skipBytes(2)
			m.globals++
		default:
			ok = false
		}
		if !ok {
			return nil, invalid("import %d: description", i)
		}
	}
	if r.off != len(r.b) {
		return nil, invalid("import section: bytes after the last import")
	}
	out := appendULEB(nil, n+1)
	out = append(out, body[first:]...)
	out = appendName(out, meterModule)
	out = appendName(out, meterFunc)
	out = append(out, 0x00)
	return appendULEB(out, m.types), nil
}

func (m *instrumenter) globalSection(body []byte) ([]byte, error) {
	r, n, err := vector(body, "global")
	if err != nil {
		return nil, err
	}
	imported := m.globals
	m.globals += n
	m.fuel = m.globals
	out := appendULEB(nil, n+1)
	for i := uint32(0); i < n; i++ {
		if !r.skipBytes(2) {
			return nil, invalid("global %d: type", i)
		}
		out = append(out, r.b[r.off-2:r.off]...)
		// A constant expression may only read imported globals.
		if out, err = m.constExpr(out, &r, imported); err != nil {
			return nil, err
		}
	}
	if r.off != len(r.b) {
		return nil, invalid("global section: bytes after the last global")
	}
	out = append(out, 0x7f, 0x01, opI32Const) // mutable i32
	out = appendSLEB(out, fuelPerRefill)
	return append(out, opEnd), nil
}

func (m *instrumenter) exportSection(body []byte) ([]byte, error) {
	r, n, err := vector(body, "export")
	if err != nil {
		return nil, err
	}
	out := appendULEB(nil, n)
	for i := uint32(0); i < n; i++ {
		start := r.off
		if _, ok := r.name(); !ok || r.off >= len(r.b) {
			return nil, invalid("export %d: name", i)
		}
		kind := r.b[r.off]
		r.off++
		out = append(out, r.b[start:r.off]...)
		idx, ok := r.u32()
		if !ok {
			return nil, invalid("export %d: index", i)
		}
		switch kind {
		case 0x00:
			idx = m.function(idx)
		case 0x03:
			if idx >= m.globals {
				return nil, fmt.Errorf("%w: exports global %d, the module has %d", ErrInvalid, idx, m.globals)
			}
		}
		out = appendULEB(out, idx)
	}
	if r.off != len(r.b) {
		return nil, invalid("export section: bytes after the last export")
	}
	return out, nil
}

func (m *instrumenter) startSection(body []byte) ([]byte, error) {
	r := reader{b: body}
	idx, ok := r.u32()
	if !ok || r.off != len(r.b) {
		return nil, invalid("start section")
	}
	return appendULEB(nil, m.function(idx)), nil
}

func (m *instrumenter) elemSection(body []byte) ([]byte, error) {
	r, n, err := vector(body, "element")
	if err != nil {
		return nil, err
	}
	out := appendULEB(nil, n)
	// Each instance keeps a reference per element of a passive segment on
	// the Go heap: the segments may hold together what the tables may.
	items, most := uint64(0), uint64(m.maxTable)*maxTables
	for i := uint32(0); i < n; i++ {
		flags, ok := r.u32()
		if !ok || flags > 7 {
			return nil, invalid("element segment %d: flags", i)
		}
		out = appendULEB(out, flags)
		if flags&2 != 0 && flags&1 == 0 { // an explicit table index
			t, ok := r.u32()
			if !ok {
				return nil, invalid("element segment %d: table", i)
			}
			out = appendULEB(out, t)
		}
		if flags&1 == 0 { // active: an offset expression
			if out, err = m.constExpr(out, &r, m.globals); err != nil {
				return nil, err
			}
		}
		if flags&3 != 0 { // the element kind or reference type
			if !r.skipBytes(1) {
				return nil, invalid("element segment %d: kind", i)
			}
			out = append(out, r.b[r.off-1])
		}
		count, ok := r.u32()
		if !ok {
			return nil, invalid("element segment %d: count", i)
		}
		if items += uint64(count); items > most {
			return nil, fmt.Errorf("%w: %w: the element segments hold more than %d elements, what %d tables of %d (sandbox code limit max_table_elements) may hold",
				ErrInvalid, ErrTooLarge, most, maxTables, m.maxTable)
		}
		out = appendULEB(out, count)
		for j := uint32(0); j < count; j++ {
			if flags&4 != 0 {
				if out, err = m.constExpr(out, &r, m.globals); err != nil {
					return nil, err
				}
				continue
			}
			idx, ok := r.u32()
			if !ok {
				return nil, invalid("element segment %d: function %d", i, j)
			}
			out = appendULEB(out, m.function(idx))
		}
	}
	if r.off != len(r.b) {
		return nil, invalid("element section: bytes after the last segment")
	}
	return out, nil
}

// constExpr copies a constant expression up to its end, moving function
// indices and refusing globals past readable.
func (m *instrumenter) constExpr(out []byte, r *reader, readable uint32) ([]byte, error) {
	for r.off < len(r.b) {
		in, err := decodeInstr(r.b, r.off)
		if err != nil {
			return nil, invalid("constant expression: %v", err)
		}
		if out, err = m.copyInstr(out, r.b, r.off, in, readable); err != nil {
			return nil, err
		}
		r.off = in.end
		if in.op == opEnd {
			return out, nil
		}
	}
	return nil, invalid("constant expression without an end")
}

// function is where function index idx of the original lies after the
// import of refuel.
func (m *instrumenter) function(idx uint32) uint32 {
	if idx >= m.funcImports {
		return idx + 1
	}
	return idx
}

// copyInstr appends the instruction in at code[off:], with its function
// index moved. An index to a global past readable is refused: in the
// original it was invalid, after the rewrite it would be the fuel.
func (m *instrumenter) copyInstr(out, code []byte, off int, in instr, readable uint32) ([]byte, error) {
	switch in.op {
	case opCall, opRefFunc:
		out = append(out, code[off:in.idxAt]...)
		out = appendULEB(out, m.function(in.index))
		return append(out, code[in.idxEnd:in.end]...), nil
	case opGlobalGet, opGlobalSet:
		if in.index >= readable {
			return nil, fmt.Errorf("%w: uses global %d, the module has %d", ErrInvalid, in.index, readable)
		}
	}
	return append(out, code[off:in.end]...), nil
}

// dataSection checks that every segment's bytes lie inside the section: the
// compiler allocates a segment's declared size before it reads it.
func (m *instrumenter) dataSection(body []byte) error {
	r, n, err := vector(body, "data")
	if err != nil {
		return err
	}
	for i := uint32(0); i < n; i++ {
		flag, ok := r.u32()
		if ok && flag == 2 {
			_, ok = r.u32() // memory index
		}
		if !ok || flag > 2 {
			return invalid("data segment %d: flags", i)
		}
		if flag != 1 { // active: an offset expression
			if _, err := m.constExpr(nil, &r, m.globals); err != nil {
				return err
			}
		}
		if !r.skipName() {
			return invalid("data segment %d: its %s runs past the section", i, "bytes")
		}
	}
	if r.off != len(r.b) {
		return invalid("data section: bytes after the last segment")
	}
	return nil
}

func (m *instrumenter) codeSection(body []byte) ([]byte, error) {
	r, n, err := vector(body, "code")
	if err != nil {
		return nil, err
	}
	out := appendULEB(make([]byte, 0, len(body)+len(body)/8), n)
	var fn []byte
	for i := uint32(0); i < n; i++ {
		size, ok := r.u32()
		if !ok || int(size) > len(r.b)-r.off {
			return nil, invalid("function %d: size", i)
		}
		if fn, err = m.body(fn[:0], r.b[r.off:r.off+int(size)], i); err != nil {
			return nil, fmt.Errorf("function %d: %w", i, err)
		}
		r.off += int(size)
		out = appendULEB(out, uint32(len(fn)))
		out = append(out, fn...)
	}
	if r.off != len(r.b) {
		return nil, invalid("code section: bytes after the last function")
	}
	return out, nil
}

// maxPrepaid bounds the constant bulk lengths one function may have
// charged ahead, with its code, at its entry and loop headers. A check
// charges what runs up to the next check before it runs, so a large charge
// ahead is a long run without a check: a straight-line body of 40,000
// memory.fills of 64 MiB each would otherwise be charged once and then fill
// for minutes. Past this bound, a bulk instruction is charged where it runs.
const maxPrepaid = 1 << 20

// prepay adds to extra the constant length of the bulk instruction after
// prev, and reports whether it fits under maxPrepaid; a length that is not
// a constant, or does not fit, is charged when it runs.
func prepay(extra *uint64, prev instr) bool {
	if prev.op != opI32Const || uint64(prev.index) > maxPrepaid-*extra {
		return false
	}
	*extra += uint64(prev.index)
	return true
}

// splitLocals splits a function body into its local declarations (the
// groups, without their count) and its code, and returns the number of
// groups and of locals declared.
func splitLocals(fn []byte) (groups uint32, locals uint64, decls, code []byte, ok bool) {
	r := reader{b: fn}
	groups, ok = r.u32()
	first := r.off
	for g := uint32(0); ok && g < groups; g++ {
		var k uint32
		k, ok = r.u32()
		locals += uint64(k)
		ok = ok && r.skipBytes(1)
	}
	return groups, locals, fn[first:r.off], fn[r.off:], ok
}

// body rewrites function f's body: the meter at its entry (or at its first
// loop header), after every loop header and before every bulk instruction
// charged when it runs, function indices moved.
func (m *instrumenter) body(out, fn []byte, f uint32) ([]byte, error) {
	groups, locals, decls, code, ok := splitLocals(fn)
	if !ok || f >= uint32(len(m.funcTypes)) {
		return nil, invalid("local declarations")
	}

	// Pass one: the weight of every loop, in the order the loops start (its
	// bytes, and the constant bulk lengths in it charged ahead), whether
	// some bulk instruction is charged when it runs, and whether the first
	// loop is reached from the entry without a branch or a call.
	m.loops, m.stack = m.loops[:0], m.stack[:0]
	m.loopStatic = m.loopStatic[:0]
	closed, dynamic, straight := false, false, true
	var extra uint64 // prepaid so far
	var prev instr
	for off := 0; off < len(code); {
		if closed {
			return nil, invalid("instructions after the end of the body")
		}
		in, err := decodeInstr(code, off)
		if err != nil {
			return nil, invalid("%v", err)
		}
		switch in.op {
		case opBlock:
			m.stack = append(m.stack, -1)
		case opIf:
			m.stack = append(m.stack, -1)
			straight = straight && len(m.loops) > 0
		case opLoop:
			m.stack = append(m.stack, len(m.loops))
			m.loops = append(m.loops, off)
			m.loopStatic = append(m.loopStatic, extra)
		case opEnd:
			if len(m.stack) == 0 {
				closed = true
				break
			}
			if top := m.stack[len(m.stack)-1]; top >= 0 {
				m.loops[top] = off - m.loops[top] + int(extra-m.loopStatic[top])
			}
			m.stack = m.stack[:len(m.stack)-1]
		case opBr, opBrIf, opBrTable, opReturn, opCall, opCallIndirect:
			straight = straight && len(m.loops) > 0
		}
		if isBulk(in) && !prepay(&extra, prev) {
			dynamic = true
		}
		prev = in
		off = in.end
	}
	if !closed {
		return nil, invalid("a block or the body has no end")
	}
	entry := len(code) + int(extra)
	prepaid := extra

	// A bulk instruction's length is kept in a local of its own, added
	// after the function's parameters and locals.
	scratch := uint64(m.params[m.funcTypes[f]]) + locals
	if dynamic && scratch < 1<<32-1 {
		out = appendULEB(out, groups+1)
		out = append(out, decls...)
		out = append(out, 0x01, 0x7f)
	} else {
		out = appendULEB(out, groups)
		out = append(out, decls...)
	}

	// Pass two: copy, with the meter: at the entry (the whole body), after
	// each loop header, before each bulk instruction charged when it runs.
	// When every path from the entry reaches the first loop header before
	// it branches or calls, that header's check charges the whole body and
	// the entry has none: each call still passes a check before it can
	// call, return or loop, and a Go function (a loop over a jump table,
	// entered right away) runs one check per call instead of two.
	firstLoop := straight && len(m.loops) > 0
	if !firstLoop {
		out = m.meter(out, entry)
	}
	loop := 0
	extra, prev = 0, instr{}
	for off := 0; off < len(code); {
		in, _ := decodeInstr(code, off) // decoded once already
		if isBulk(in) && !prepay(&extra, prev) {
			out = m.meterLength(out, uint32(scratch))
		}
		var err error
		if out, err = m.copyInstr(out, code, off, in, m.globals); err != nil {
			return nil, err
		}
		switch in.op {
		case opLoop:
			w := m.loops[loop]
			if loop == 0 && firstLoop {
				w = max(w, entry)
			}
			out = m.meter(out, w)
			loop++
		case opCall, opCallIndirect:
			if rest := len(code) - in.end + int(prepaid-extra); rest > maxAfterCall {
				out = m.meter(out, rest)
			}
		}
		prev = in
		off = in.end
	}
	return out, nil
}

// maxAfterCall bounds the work, in bytes of code and constant bulk
// lengths, that may follow a call up to the end of the function without a
// check after the call. The entry charged it, but a return runs it later:
// a chain of calls a million frames deep, each with a long straight-line
// tail after its call, would run all those tails without a check while it
// unwinds. A call followed by more gets a check of its own.
const maxAfterCall = 1 << 10

// isBulk reports whether in does work in proportion to a length operand on
// the top of the stack: memory.init, memory.copy, memory.fill, table.init,
// table.copy and table.fill.
func isBulk(in instr) bool {
	if in.op != 0xfc {
		return false
	}
	switch in.sub {
	case 8, 10, 11, 12, 14, 17:
		return true
	}
	return false
}

// meterLength appends the fuel check of a bulk instruction, whose length
// is on the top of the stack (and stays there), one unit per fuelBytes:
//
//	scratch = len
//	fuel -= scratch / fuelBytes
//	if fuel < 0 { fuel = refuel() }
func (m *instrumenter) meterLength(out []byte, scratch uint32) []byte {
	out = append(out, 0x22) // local.tee
	out = appendULEB(out, scratch)
	out = append(out, opGlobalGet)
	out = appendULEB(out, m.fuel)
	out = append(out, 0x20) // local.get
	out = appendULEB(out, scratch)
	out = append(out, opI32Const, fuelShift, 0x76, opI32Sub, opGlobalSet) // i32.shr_u
	out = appendULEB(out, m.fuel)
	return m.check(out)
}

// meter appends the fuel check for a stretch of n bytes of code:
//
//	fuel -= 1 + n/fuelBytes
//	if fuel < 0 { fuel = refuel() }
func (m *instrumenter) meter(out []byte, n int) []byte {
	out = append(out, opGlobalGet)
	out = appendULEB(out, m.fuel)
	out = append(out, opI32Const)
	out = appendSLEB(out, int32(1+n/fuelBytes))
	out = append(out, opI32Sub, opGlobalSet)
	out = appendULEB(out, m.fuel)
	return m.check(out)
}

// check appends: if fuel < 0 { fuel = refuel() }.
func (m *instrumenter) check(out []byte) []byte {
	out = append(out, opGlobalGet)
	out = appendULEB(out, m.fuel)
	out = append(out, opI32Const, 0x00, opI32LtS, opIf, blockTypeNil, opCall)
	out = appendULEB(out, m.funcImports)
	out = append(out, opGlobalSet)
	out = appendULEB(out, m.fuel)
	return append(out, opEnd)
}

// customSection keeps the name section, with function indices moved (a
// trap's stack trace names the guest's functions), and every other custom
// section as it is. It drops a name section it cannot read, and the
// subsections past local names, rather than refuse the module.
func (m *instrumenter) customSection(body []byte) []byte {
	r := reader{b: body}
	name, ok := r.name()
	if !ok || name != "name" {
		return body
	}
	out := append([]byte(nil), body[:r.off]...)
	for r.off < len(r.b) {
		id := r.b[r.off]
		r.off++
		size, ok := r.u32()
		if !ok || int(size) > len(r.b)-r.off {
			return nil
		}
		sub := reader{b: r.b[:r.off+int(size)], off: r.off}
		r.off += int(size)
		if id > 2 {
			continue
		}
		if id == 0 { // the module's name
			if start := sub.off; sub.skipName() && sub.off == len(sub.b) {
				out = append(out, id)
				out = appendULEB(out, size)
				out = append(out, sub.b[start:]...)
			}
			continue
		}
		n, ok := sub.u32()
		if !ok {
			return nil
		}
		content := appendULEB(nil, n)
		for i := uint32(0); i < n; i++ {
			idx, ok := sub.u32()
			if !ok {
				return nil
			}
			content = appendULEB(content, m.function(idx))
			start := sub.off
			if id == 1 {
				ok = sub.skipName()
			} else { // local names: a map of local index to name
				var k uint32
				k, ok = sub.u32()
				for j := uint32(0); ok && j < k; j++ {
					_, ok = sub.u32()
					ok = ok && sub.skipName()
				}
			}
			if !ok {
				return nil
			}
			content = append(content, sub.b[start:sub.off]...)
		}
		out = append(out, id)
		out = appendULEB(out, uint32(len(content)))
		out = append(out, content...)
	}
	return out
}

func (r *reader) skipBytes(n int) bool {
	if len(r.b)-r.off < n {
		return false
	}
	r.off += n
	return true
}

func (r *reader) name() (string, bool) {
	n, ok := r.u32()
	if !ok || !r.skipBytes(int(n)) {
		return "", false
	}
	return string(r.b[r.off-int(n) : r.off]), true
}

func (r *reader) skipName() bool {
	n, ok := r.u32()
	return ok && r.skipBytes(int(n))
}

// limits skips table or memory limits: a flag, a minimum, and a maximum when
// the flag says so.
func (r *reader) limits() bool {
	if r.off >= len(r.b) {
		return false
	}
	flag := r.b[r.off]
	r.off++
	if _, ok := r.leb(); !ok {
		return false
	}
	if flag&1 != 0 {
		_, ok := r.leb()
		return ok
	}
	return true
}

func appendName(b []byte, s string) []byte {
	b = appendULEB(b, uint32(len(s)))
	return append(b, s...)
}

func appendULEB(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendSLEB(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
