package decode

import "encoding/binary"

// keyTable finds the field a key names with one multiplication and one
// comparison, whatever the key: a perfect hash over the declared keys, found
// when the decoder is built. Comparing a key against every declared path
// costs a mispredicted branch per path, and a map hashes every byte; this
// hashes the first eight bytes, the last eight and the length, so keys that
// differ only in their middle can collide, and a schema with such keys
// falls back to a map (Decoder.byKey).
type keyTable struct {
	seed  uint64
	slots []keySlot // a power of two of them, at most maxTable
}

// keySlot holds what decides a match for keys of up to eight bytes, so that
// the common lookup touches one cache line.
type keySlot struct {
	word  uint64 // keyWord of the key
	plen  int32  // its length
	field int32  // the first field read from it, or -1
}

// maxTable bounds the table: schemas have at most abi.MaxFields fields. A
// slot is picked from the top bits of a product, the best mixed ones.
const (
	maxTable  = 1 << tableBits
	tableBits = 10
)

// keyWord returns the first eight bytes of a key of n bytes (fewer for a
// shorter key), little-endian, reading them from room, which starts with the
// key. Loading a whole word from a record and masking off the bytes after a
// short key is the fast case.
func keyWord(room []byte, n int) uint64 {
	if len(room) >= 8 {
		w := binary.LittleEndian.Uint64(room)
		if n < 8 {
			w &= 1<<(8*n&63) - 1
		}
		return w
	}
	var w uint64
	for k := min(n, 8) - 1; k >= 0; k-- {
		w = w<<8 | uint64(room[k])
	}
	return w
}

// slot returns the slot of a key with keyWord w.
func (t *keyTable) slot(key []byte, w uint64) *keySlot {
	n := len(key)
	s := w ^ uint64(n)*0x9E3779B97F4A7C15
	if n > 8 {
		s ^= binary.LittleEndian.Uint64(key[n-8:]) * 0xC2B2AE3D27D4EB4F
	}
	return &t.slots[(s*t.seed)>>(64-tableBits)&uint64(len(t.slots)-1)]
}

// build looks for a seed under which the keys land in distinct slots and
// reports whether it found one.
func (t *keyTable) build(keys []string, fields []int) bool {
	size := 16
	for size < 4*len(keys) {
		size *= 2
	}
	if size > maxTable {
		return false
	}
	t.slots = make([]keySlot, size)
	x := uint64(0x853C49E6748FEA9B)
	for range 1000 {
		x = x*6364136223846793005 + 1442695040888963407 // an LCG: any odd seed will do
		t.seed = x | 1
		for i := range t.slots {
			t.slots[i] = keySlot{field: -1}
		}
		ok := true
		for i, k := range keys {
			b := []byte(k)
			w := keyWord(b, len(b))
			s := t.slot(b, w)
			if s.field >= 0 {
				ok = false
				break
			}
			*s = keySlot{word: w, plen: int32(len(k)), field: int32(fields[i])}
		}
		if ok {
			return true
		}
	}
	return false
}

// lookup returns the first field read from key, or -1. room starts with
// key and may go on past it.
func (d *Decoder) lookup(key, room []byte) int {
	if d.byKey != nil {
		if j, ok := d.byKey[string(key)]; ok {
			return j
		}
		return -1
	}
	w := keyWord(room, len(key))
	s := d.keys.slot(key, w)
	if int(s.plen) != len(key) || s.word != w {
		return -1
	}
	j := int(s.field)
	if len(key) > 8 && d.fields[j].path != string(key) {
		return -1
	}
	return j
}

// keyPred predicts the key of one member of an object from the record
// before: producers write the same keys in the same order every time, so
// comparing two words against last record's text usually replaces scanning
// the key, hashing it and looking it up.
type keyPred struct {
	text  [2]uint64 // the member's text from the opening quote to the colon
	mask  [2]uint64 // which bytes of text count
	n     int32     // the length of that text
	field int32     // the first field read from the key, or -1
}

// never is a prediction that matches no text: no masked word is 1.
var never = keyPred{text: [2]uint64{1, 0}}

// set makes v[quote:end], a compact key and colon, the prediction. Only a
// plain key (no escapes, no multi-byte characters) qualifies, whose bytes
// alone decide that it is well-formed.
func (p *keyPred) set(v []byte, quote, end, field int, plain bool) {
	n := end - quote
	if !plain || n > 16 || quote+16 > len(v) {
		*p = never
		return
	}
	p.n, p.field = int32(n), int32(field)
	for w := range 2 {
		m := uint64(0)
		if b := n - 8*w; b >= 8 {
			m = ^uint64(0)
		} else if b > 0 {
			m = 1<<(8*b) - 1
		}
		p.mask[w] = m
		p.text[w] = load8(v, quote+8*w) & m
	}
}
