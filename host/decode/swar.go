package decode

import (
	"encoding/binary"
	"math/bits"
)

// The scanner's hot loops read eight bytes at a time ("SIMD within a
// register"): on the reference box a byte-at-a-time loop costs more than a
// nanosecond per byte, which alone would eat the decoding budget.

const (
	lo8 = 0x0101010101010101
	hi8 = 0x8080808080808080
)

func load8(v []byte, i int) uint64 { return binary.LittleEndian.Uint64(v[i : i+8]) }

// specialMask has the high bit set in each byte of x that a string cannot
// hold as is (see plain). Bits above the lowest set one may be spurious
// (borrows), so only its lowest set bit is meaningful.
func specialMask(x uint64) uint64 {
	q := x ^ (lo8 * '"')
	b := x ^ (lo8 * '\\')
	return ((q - lo8) &^ q & hi8) | ((b - lo8) &^ b & hi8) | ((x - lo8*0x20) &^ x & hi8) | (x & hi8)
}

// scanPlain returns the index of the first byte at or after i that is not
// plain, or len(v).
func scanPlain(v []byte, i int) int {
	for i+8 <= len(v) {
		if m := specialMask(load8(v, i)); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
		i += 8
	}
	for i < len(v) && plain[v[i]] {
		i++
	}
	return i
}

// scanPlainFast is scanPlain with its first word inlined into the caller:
// most keys and values end within it.
func scanPlainFast(v []byte, i int) int {
	if i+8 <= len(v) {
		if m := specialMask(load8(v, i)); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
		return scanPlain(v, i+8)
	}
	return scanPlain(v, i)
}

// nonDigits has a nonzero byte for each byte of x that is not an ASCII
// digit. As in specialMask, only its lowest nonzero byte is exact.
func nonDigits(x uint64) uint64 {
	return (x&0xF0F0F0F0F0F0F0F0 ^ 0x3030303030303030) | ((x+0x0606060606060606)&0xF0F0F0F0F0F0F0F0 ^ 0x3030303030303030)
}

var pow10u = [...]uint64{1, 10, 100, 1000, 1e4, 1e5, 1e6, 1e7, 1e8}

// digits reads the run of ASCII digits at v[i:] and returns its value (mod
// 2^64) and the index after it, eight digits per step.
func digits(v []byte, i int) (uint64, int) {
	var u uint64
	for {
		var x uint64
		switch {
		case i >= len(v):
			return u, i
		case i+8 <= len(v):
			x = load8(v, i)
		case len(v) >= 8:
			// Fewer than eight bytes left: load the last word and shift
			// them down; the zeros shifted in end the run.
			x = load8(v, len(v)-8) >> (8 * (8 - (len(v) - i)) & 63)
		default:
			for ; i < len(v) && isDigit(v[i]); i++ {
				u = u*10 + uint64(v[i]-'0')
			}
			return u, i
		}
		nd := nonDigits(x)
		if nd == 0 {
			u = u*1e8 + parseEight(x)
			i += 8
			continue
		}
		k := bits.TrailingZeros64(nd) >> 3
		if k > 0 {
			// Move the k digits to the top and fill the bytes below
			// with '0's: eight digits of the same value.
			x = x<<(64-8*k) | 0x3030303030303030>>(8*k)
			u = u*pow10u[k] + parseEight(x)
		}
		return u, i + k
	}
}

// parseEight returns the value of eight ASCII digits, the first in the low
// byte.
func parseEight(x uint64) uint64 {
	const mask = 0x000000FF000000FF
	const mul1 = 0x000F424000000064 // 100 + (1000000 << 32)
	const mul2 = 0x0000271000000001 // 1 + (10000 << 32)
	x -= 0x3030303030303030
	x = x*10 + x>>8
	return (((x & mask) * mul1) + (((x >> 16) & mask) * mul2)) >> 32
}

// appendShort appends v[start:end] to dst. Values are mostly a few bytes
// long, where a call to memmove costs more than the copy: when both sides
// have room, two words are copied whatever the length, and the bytes past
// end land in dst's spare capacity, where nothing reads them.
func appendShort(dst, v []byte, start, end int) []byte {
	n := len(dst)
	if end-start <= 16 && start+16 <= len(v) && cap(dst)-n >= 16 {
		w := dst[n : n+16]
		binary.LittleEndian.PutUint64(w, load8(v, start))
		binary.LittleEndian.PutUint64(w[8:], load8(v, start+8))
		return dst[:n+end-start]
	}
	return append(dst, v[start:end]...)
}
