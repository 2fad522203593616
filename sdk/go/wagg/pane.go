package wagg

import (
	"encoding/binary"
	"math/bits"

	"github.com/wagg/wagg/abi"
)

// pane is one window instance (one start): its groups in a hash table of
// their own. Groups live in flat arrays in insertion order: no pointer per
// group for the garbage collector to chase, good locality, and an order that
// depends only on the input, so flushes and snapshots are deterministic
// without sorting.
type pane struct {
	start  int64
	nm     int      // metrics per group
	keys   []byte   // every group's encoded key, back to back
	ends   []uint32 // ends[i]: end of group i's key in keys
	hashes []uint64 // hashes[i]: hash of group i's key
	vals   []uint64 // nm values per group
	dirty  []uint32 // groups changed since the last flush
	marked []bool   // marked[i]: group i is in dirty
	// link[i] is the same key's group + 1 in the pane of the first global
	// window, 0 while unknown (see Key.resolve).
	link  []uint32
	slots []uint32 // open addressing: group index + 1; 0 is empty
	// sketches of the distinct metrics: such a metric's value in vals is
	// the index of its sketch here.
	sketches []abi.Sketch
}

func newPane(start int64, nm int) *pane {
	return &pane{start: start, nm: nm, slots: make([]uint32, 16)}
}

func (p *pane) len() int { return len(p.ends) }

func (p *pane) key(i uint32) []byte {
	from := uint32(0)
	if i > 0 {
		from = p.ends[i-1]
	}
	return p.keys[from:p.ends[i]]
}

func (p *pane) values(i uint32) []uint64 { return p.vals[int(i)*p.nm : int(i+1)*p.nm] }

// sketch is the sketch of distinct metric j of group i.
func (p *pane) sketch(i uint32, j int) *abi.Sketch { return &p.sketches[p.vals[int(i)*p.nm+j]] }

// lookup returns key's group, or the empty slot where it would go. Key.target
// has the same probe written out: in Wasm the call costs more than the probe.
func (p *pane) lookup(key []byte, h uint64) (g uint32, slot uint64, ok bool) {
	mask := uint64(len(p.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := p.slots[i]
		if s == 0 {
			return 0, i, false
		}
		if g := s - 1; p.hashes[g] == h && len(p.key(g)) == len(key) && sameKey(p.key(g), key) {
			return g, 0, true
		}
	}
}

// insert adds a group for key in the empty slot i.
func (p *pane) insert(key []byte, h uint64, idents []uint64, distinct []int, i uint64) uint32 {
	g := uint32(len(p.ends))
	p.keys = append(p.keys, key...)
	p.ends = append(p.ends, uint32(len(p.keys)))
	p.hashes = append(p.hashes, h)
	p.vals = append(p.vals, idents...)
	for _, j := range distinct {
		p.vals[int(g)*p.nm+j] = uint64(len(p.sketches))
		p.sketches = append(p.sketches, abi.Sketch{})
	}
	p.marked = append(p.marked, false)
	p.link = append(p.link, 0)
	p.slots[i] = g + 1
	if 2*len(p.ends) > len(p.slots) {
		p.grow()
	}
	return g
}

func (p *pane) grow() {
	p.slots = make([]uint32, 2*len(p.slots))
	mask := uint64(len(p.slots) - 1)
	for g, h := range p.hashes {
		i := h & mask
		for p.slots[i] != 0 {
			i = (i + 1) & mask
		}
		p.slots[i] = uint32(g) + 1
	}
}

// touch marks group g changed since the last flush.
func (p *pane) touch(g uint32) {
	if !p.marked[g] {
		p.marked[g] = true
		p.dirty = append(p.dirty, g)
	}
}

// hashKey hashes an encoded key, 8 bytes at a time: keys are short (an
// int64 is one word), and a cheap multiply-rotate mix is plenty for a table
// that compares full keys anyway.
func hashKey(b []byte) uint64 {
	const m1, m2 = 0x9e3779b97f4a7c15, 0xc2b2ae3d27d4eb4f
	h := uint64(len(b)) * m1
	for len(b) >= 8 {
		h = bits.RotateLeft64((h^binary.LittleEndian.Uint64(b))*m2, 31)
		b = b[8:]
	}
	// the tail in at most three loads: a loop per byte costs a meter check
	// per byte in Wasm
	var t uint64
	sh := 0
	if len(b)&4 != 0 {
		t = uint64(binary.LittleEndian.Uint32(b))
		b, sh = b[4:], 32
	}
	if len(b)&2 != 0 {
		t |= uint64(binary.LittleEndian.Uint16(b)) << sh
		b, sh = b[2:], sh+16
	}
	if len(b)&1 != 0 {
		t |= uint64(b[0]) << sh
	}
	h = (h ^ t) * m2
	h ^= h >> 29
	h *= m1
	return h ^ h>>32
}
