package wagg

import (
	"encoding/binary"
	"unsafe"
)

// Unchecked access for the hot loops of Columns. Each caller states why
// its indexes are in range; these do not check. A slice's data pointer is
// one word the loop keeps live where the slice is three, and an unchecked
// index saves the compare and branch that Go's Wasm code pays per index.

// data is the address of s's first element (nil for an empty s).
func data[T any](s []T) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(s)) }

func u32(p unsafe.Pointer, i int) uint32 { return *(*uint32)(unsafe.Add(p, 4*i)) }

func u64(p unsafe.Pointer, i int) uint64 { return *(*uint64)(unsafe.Add(p, 8*i)) }

func set64(p unsafe.Pointer, i int, v uint64) { *(*uint64)(unsafe.Add(p, 8*i)) = v }

func groupAt(p unsafe.Pointer, i uint32) *group {
	return (*group)(unsafe.Add(p, uintptr(i)*unsafe.Sizeof(group{})))
}

// word reads the 8 bytes at byte offset off, little-endian, unaligned.
func word(p unsafe.Pointer, off uint32) uint64 {
	return binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(p, off))[:])
}

func set32(p unsafe.Pointer, i int, v uint32) { *(*uint32)(unsafe.Add(p, 4*i)) = v }

// putWord, set32b and set16b write little-endian at byte offset off, unaligned.
func putWord(p unsafe.Pointer, off uint32, v uint64) {
	binary.LittleEndian.PutUint64((*[8]byte)(unsafe.Add(p, off))[:], v)
}

func set32b(p unsafe.Pointer, off uint32, v uint32) {
	binary.LittleEndian.PutUint32((*[4]byte)(unsafe.Add(p, off))[:], v)
}

func set16b(p unsafe.Pointer, off uint32, v uint16) {
	binary.LittleEndian.PutUint16((*[2]byte)(unsafe.Add(p, off))[:], v)
}
