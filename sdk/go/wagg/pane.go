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
	nm     int     // metrics per group
	keys   []byte  // every group's encoded key, back to back
	groups []group // in the order they were created
	vals   []uint64
	dirty  []uint32 // groups changed since the last flush
	slots  []uint32 // open addressing: group index + 1; 0 is empty
	// sketches of the distinct metrics: such a metric's value in vals is
	// the index of its sketch here.
	sketches []abi.Sketch
}

// group is what a lookup reads of a group besides its key and values, in
// one place: a lookup that finds it touches one cache line for all of it.
type group struct {
	hash     uint64
	from, to uint32 // its key is keys[from:to]
	// link is the same key's group + 1 in the pane of the first global
	// window, 0 while unknown (see Key.resolve).
	link   uint32
	marked bool // in dirty
}

func newPane(start int64, nm int) *pane {
	return &pane{start: start, nm: nm, slots: make([]uint32, 16)}
}

func (p *pane) len() int { return len(p.groups) }

func (p *pane) key(i uint32) []byte { return p.keys[p.groups[i].from:p.groups[i].to] }

func (p *pane) values(i uint32) []uint64 { return p.vals[int(i)*p.nm : int(i+1)*p.nm] }

// sketch is the sketch of distinct metric j of group i.
func (p *pane) sketch(i uint32, j int) *abi.Sketch { return &p.sketches[p.vals[int(i)*p.nm+j]] }

// lookup returns key's group, or the empty slot where it would go. Key.target
// and Columns.lookup have the same probe written out: in Wasm the call costs
// more than the probe.
func (p *pane) lookup(key []byte, h uint64) (g uint32, slot uint64, ok bool) {
	mask := uint64(len(p.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := p.slots[i]
		if s == 0 {
			return 0, i, false
		}
		if g := s - 1; p.groups[g].hash == h && len(p.key(g)) == len(key) && sameKey(p.key(g), key) {
			return g, 0, true
		}
	}
}

// insert adds a group for key in the empty slot i.
func (p *pane) insert(key []byte, h uint64, idents []uint64, distinct []int, i uint64) uint32 {
	g := uint32(len(p.groups))
	from := uint32(len(p.keys))
	p.keys = append(p.keys, key...)
	p.groups = append(p.groups, group{hash: h, from: from, to: uint32(len(p.keys))})
	p.vals = append(p.vals, idents...)
	for _, j := range distinct {
		p.vals[int(g)*p.nm+j] = uint64(len(p.sketches))
		p.sketches = append(p.sketches, abi.Sketch{})
	}
	p.slots[i] = g + 1
	if 2*len(p.groups) > len(p.slots) {
		p.grow()
	}
	return g
}

func (p *pane) grow() {
	p.slots = make([]uint32, 2*len(p.slots))
	mask := uint64(len(p.slots) - 1)
	for g := range p.groups {
		i := p.groups[g].hash & mask
		for p.slots[i] != 0 {
			i = (i + 1) & mask
		}
		p.slots[i] = uint32(g) + 1
	}
}

// touch marks group g changed since the last flush.
func (p *pane) touch(g uint32) {
	if gr := &p.groups[g]; !gr.marked {
		gr.marked = true
		p.dirty = append(p.dirty, g)
	}
}

// A key's hash is built column by column as the key is filled: an int64 or
// float64 column mixes in its word; a string column its length, then its
// words, then its tail (fewer than 8 bytes) as one word. A cheap
// multiply-rotate mix is plenty for a table that compares full keys anyway.
const hashSeed, m1, m2 = 0x2545f4914f6cdd1d, 0x9e3779b97f4a7c15, 0xc2b2ae3d27d4eb4f

func mix(h, w uint64) uint64 { return bits.RotateLeft64((h^w)*m2, 31) }

// hashString mixes a string column into h.
func hashString(h uint64, s []byte) uint64 {
	h = mix(h, uint64(len(s)))
	for len(s) >= 8 {
		h = mix(h, binary.LittleEndian.Uint64(s))
		s = s[8:]
	}
	if len(s) > 0 {
		h = mix(h, tail(s))
	}
	return h
}

// tail reads fewer than 8 bytes as a word, in at most three loads: a loop
// per byte costs a meter check per byte in Wasm.
func tail(s []byte) uint64 {
	var t uint64
	sh := 0
	if len(s)&4 != 0 {
		t = uint64(binary.LittleEndian.Uint32(s))
		s, sh = s[4:], 32
	}
	if len(s)&2 != 0 {
		t |= uint64(binary.LittleEndian.Uint16(s)) << sh
		s, sh = s[2:], sh+16
	}
	if len(s)&1 != 0 {
		t |= uint64(s[0]) << sh
	}
	return t
}

// finish is the last step of a key's hash.
func finish(h uint64) uint64 {
	h ^= h >> 29
	h *= m1
	return h ^ h>>32
}

// hashKey hashes an encoded key of the given column types, as its columns
// were filled; a key too short for its types (which restore refuses
// before) hashes what it holds.
func hashKey(types []keyType, key []byte) uint64 {
	h := uint64(hashSeed)
	for _, t := range types {
		if t != keyString {
			if len(key) < 8 {
				break
			}
			h = mix(h, binary.LittleEndian.Uint64(key))
			key = key[8:]
			continue
		}
		if len(key) < 4 {
			break
		}
		n := binary.LittleEndian.Uint32(key)
		key = key[4:]
		if uint64(n) > uint64(len(key)) {
			break
		}
		h = hashString(h, key[:n])
		key = key[n:]
	}
	return finish(h)
}
