package sandbox

import (
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
	return l
}

// CodeStats describe a module's code section.
type CodeStats struct {
	Functions       int // function bodies
	CodeSize        int // bytes of the code section
	MaxFunctionSize int // bytes of the largest body
	MaxLocals       int // most locals declared by one body
}

// ScanCode reads the section headers of a WebAssembly binary and the
// code section's function sizes and local declarations, without decoding
// any instruction, and checks them against l (zero fields take the
// defaults). Its work is linear in the number of sections and functions and
// it allocates nothing per function. A malformed binary wraps ErrInvalid; a
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
	for r.off < len(r.b) {
		id := r.b[r.off]
		r.off++
		size, ok := r.u32()
		if !ok || int(size) > len(r.b)-r.off {
			return st, bad("section %d at byte %d: size runs past the end", id, r.off)
		}
		end := r.off + int(size)
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
			body.off = fend
		}
		if body.off != end {
			return st, bad("code section: %d bytes after the last function", end-body.off)
		}
		r.off = end
	}
	return st, nil
}

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
