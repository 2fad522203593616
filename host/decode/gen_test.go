package decode

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
)

// gen writes random well-formed JSON: the differential tests below feed it
// to the decoder and to encoding/json, reaching far more shapes of numbers,
// strings and nesting than the fuzzer finds from bytes alone.
type gen struct {
	r *rand.Rand
	b strings.Builder
}

func (g *gen) space() {
	if g.r.IntN(8) == 0 {
		g.b.WriteString([]string{" ", "\n", "\t", "\r\n  ", "  "}[g.r.IntN(5)])
	}
}

func (g *gen) int() {
	switch g.r.IntN(6) {
	case 0:
		g.b.WriteString(strconv.FormatInt(g.r.Int64(), 10))
	case 1:
		g.b.WriteString(strconv.FormatInt(-g.r.Int64(), 10))
	case 2:
		g.b.WriteString([]string{"0", "-0", "9223372036854775807", "-9223372036854775808", "1", "-1"}[g.r.IntN(6)])
	default:
		g.b.WriteString(strconv.FormatInt(g.r.Int64N(1<<(1+g.r.IntN(50)))-g.r.Int64N(100), 10))
	}
}

func (g *gen) float() {
	switch g.r.IntN(6) {
	case 0:
		g.int()
	case 1:
		g.b.WriteString(strconv.FormatFloat(g.r.NormFloat64()*math.Pow(10, float64(g.r.IntN(40)-20)), 'g', -1, 64))
	case 2:
		g.b.WriteString(strconv.FormatFloat(math.Float64frombits(g.r.Uint64()&^(0x7ff<<52)|uint64(g.r.IntN(0x7ff))<<52), 'e', -1, 64))
	default:
		// Decimal text of random length and exponent.
		if g.r.IntN(2) == 0 {
			g.b.WriteByte('-')
		}
		g.b.WriteString(strconv.Itoa(g.r.IntN(1000000)))
		if g.r.IntN(2) == 0 {
			g.b.WriteByte('.')
			for range 1 + g.r.IntN(25) {
				g.b.WriteByte(byte('0' + g.r.IntN(10)))
			}
		}
		if g.r.IntN(2) == 0 {
			g.b.WriteString([]string{"e", "E", "e+", "e-", "E-"}[g.r.IntN(5)])
			g.b.WriteString(strconv.Itoa(g.r.IntN(330)))
		}
	}
}

func (g *gen) str() {
	g.b.WriteByte('"')
	for range g.r.IntN(24) {
		switch g.r.IntN(12) {
		case 0:
			g.b.WriteString([]string{`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`}[g.r.IntN(8)])
		case 1:
			fmt.Fprintf(&g.b, `\u%04x`, g.r.IntN(0x10000)) // lone surrogates included
		case 2:
			r := g.r.IntN(0x100000) // a pair for U+10000 + r
			fmt.Fprintf(&g.b, `\u%04X\u%04X`, 0xD800+r>>10, 0xDC00+r&0x3ff)
		case 3:
			g.b.WriteString([]string{"é", "日本", "😀", "\u2028", "\x7f"}[g.r.IntN(5)])
		default:
			c := byte(' ' + g.r.IntN(95))
			if c == '"' || c == '\\' {
				c = 'q'
			}
			g.b.WriteByte(c)
		}
	}
	g.b.WriteByte('"')
}

func (g *gen) value(depth int) {
	n := 7
	if depth > 6 {
		n = 5
	}
	switch g.r.IntN(n) {
	case 0:
		g.int()
	case 1:
		g.float()
	case 2:
		g.str()
	case 3:
		g.b.WriteString([]string{"true", "false", "null"}[g.r.IntN(3)])
	case 4:
		g.int()
	case 5:
		g.b.WriteByte('[')
		g.space()
		for k := range g.r.IntN(4) {
			if k > 0 {
				g.b.WriteByte(',')
				g.space()
			}
			g.value(depth + 1)
			g.space()
		}
		g.b.WriteByte(']')
	case 6:
		g.object(depth+1, nil)
	}
}

// key writes key, escaping some of its characters at random.
func (g *gen) key(key string) {
	g.b.WriteByte('"')
	for _, c := range key {
		if c == '"' || c == '\\' {
			g.b.WriteByte('\\')
			g.b.WriteRune(c)
		} else if g.r.IntN(20) == 0 {
			fmt.Fprintf(&g.b, `\u%04x`, c)
		} else {
			g.b.WriteRune(c)
		}
	}
	g.b.WriteByte('"')
}

// object writes an object; at the top (fields != nil) it uses the declared
// keys with values of their type, mostly, and in a shuffled order.
func (g *gen) object(depth int, fields []abi.Field) {
	g.b.WriteByte('{')
	g.space()
	type member struct {
		key string
		typ abi.Type
	}
	var ms []member
	for _, f := range fields {
		if g.r.IntN(6) > 0 {
			ms = append(ms, member{f.JSONPath(), f.Type})
		}
	}
	for range g.r.IntN(4) {
		ms = append(ms, member{[]string{"x", "user_id", "ts", "nested", "poll", "k\"ey", "é"}[g.r.IntN(7)], ""})
	}
	g.r.Shuffle(len(ms), func(a, b int) { ms[a], ms[b] = ms[b], ms[a] })
	seen := map[string]bool{}
	first := true
	for _, m := range ms {
		if seen[m.key] {
			continue
		}
		seen[m.key] = true
		if !first {
			g.b.WriteByte(',')
			g.space()
		}
		first = false
		g.key(m.key)
		g.space()
		g.b.WriteByte(':')
		g.space()
		switch {
		case m.typ == "" || g.r.IntN(30) == 0:
			g.value(depth)
		case g.r.IntN(25) == 0:
			g.b.WriteString("null")
		case m.typ == abi.Int64:
			g.int()
		case m.typ == abi.Float64:
			g.float()
		default:
			g.str()
		}
		g.space()
	}
	g.b.WriteByte('}')
}

// TestDecoder_AgreesWithEncodingJSON decodes generated records with one
// long-lived decoder per schema, so that key predictions carry over from
// record to record, and checks every accepted record against encoding/json.
func TestDecoder_AgreesWithEncodingJSON(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 2000
	}
	g := &gen{r: rand.New(rand.NewPCG(1, 2))}
	for si, s := range fuzzSchemas[:2] {
		d := New(s)
		accepted := 0
		for range n {
			g.b.Reset()
			g.space()
			g.object(0, s.Input)
			g.space()
			value := []byte(g.b.String())
			if !json.Valid(value) {
				t.Fatalf("the generator wrote invalid JSON: %s", value)
			}
			before := d.Len()
			err := d.Add(value, 2)
			if err != nil {
				checkRejection(t, si, s, value, err, true)
				if d.Len() != before {
					t.Fatalf("a failed Add changed the batch")
				}
				continue
			}
			accepted++
			compareWithEncodingJSON(t, si, s, value, recordAt(s, d.Batch(), d.Len()-1))
			if d.Len() == 500 {
				roundTrip(t, s, d.Batch())
				d.Reset()
			}
		}
		if accepted < n/4 {
			t.Fatalf("schema %d: only %d of %d generated records accepted", si, accepted, n)
		}
	}
}

// TestDecoder_PredictedKeysChangeNothing decodes records whose keys look
// like the last record's, with one decoder that carries its predictions
// along and a fresh decoder per record, and wants the same outcome.
func TestDecoder_PredictedKeysChangeNothing(t *testing.T) {
	s := schema(false, optional(intField("poll_id")), optional(stringField("option")),
		optional(abi.Field{Name: "long", Type: abi.Int64, Path: "a_long_key_name"}),
		optional(intField("a")), optional(intField("ab")),
		optional(abi.Field{Name: "longer", Type: abi.Int64, Path: "a_long_key_name_x"}),
		optional(abi.Field{Name: "longest", Type: abi.Int64, Path: "a_long_key_name_x_y"}))
	values := []string{
		`{"poll_id":1,"option":"a","user_id":"u","ts":1}`,
		`{"poll_id":2,"option":"b","user_id":"u","ts":2}`,
		`{"poll_ie":3,"option":"c","user_id":"u","ts":3}`,   // one byte off
		`{"poll_idx":4,"option":"d","user_id":"u","ts":4}`,  // longer
		`{"poll_i":5,"option":"e","user_id":"u","ts":5}`,    // shorter
		`{"option":"f","poll_id":6,"user_id":"u","ts":6}`,   // reordered
		`{"poll_id" :7,"option":"g","user_id":"u","ts":7}`,  // space before the colon
		`{"poll\u005fid":8,"option":"h"}`,                   // escaped
		`{"poll_id":9,"option":"i","user_id":"u","ts":9}`,   // back to normal
		`{"poll_id":10,"option":"j","user_id":"u","ts":10}`, // and again
		`{"a_long_key_name":11,"ab":1,"a":2}`,
		`{"a_long_key_name":12,"ab":3,"a":4}`,
		`{"a_long_key_namf":13,"ab":5,"a":6}`,
		`{"a":7,"ab":8}`,
		`{"ab":9,"a":10}`,
		`{"a":11,"a":12}`,
		`{"poll_id":1,"poll_id":2}`,
		`{"poll_id":13,"option":"k","user_id":"u","ts":13}`,
		`{"a":1}`,
		`{"a":2}`,
		`{"poll_id":"x"}`,
		`{"poll_id":14}`,
		// Member texts of 16 bytes and more, differing past the 16th.
		`{"a_long_key_name":1}`,
		`{"a_long_key_namf":2}`,
		`{"a_long_key_name_x":3}`,
		`{"a_long_key_name_y":4}`,
		`{"a_long_key_name_x_y":5}`,
		`{"a_long_key_name_x_z":6}`,
		`{"a_long_key_name_x":7,"a_long_key_name_x_y":8}`,
		`{"a_long_key_name_x":9,"a_long_key_name_x_z":10}`,
	}
	long := New(s)
	for _, v := range values {
		err := long.Add([]byte(v), 42)
		want, wantErr := decodeOne(t, s, v)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Fatalf("Add(%s) = %v with predictions, %v without", v, err, wantErr)
		}
		if err == nil {
			rs := records(s, long.Batch())
			if got := rs[len(rs)-1].values; !valuesEqual(got, want) {
				t.Fatalf("Add(%s) = %#v with predictions, %#v without", v, got, want)
			}
		}
	}
}

func valuesEqual(a, b []any) bool {
	return equalRecords([]record{{values: a}}, []record{{values: b}})
}

// TestParseFloat_MatchesStrconv holds the fast path to strconv's rounding
// on many generated numbers, well beyond what records reach.
func TestParseFloat_MatchesStrconv(t *testing.T) {
	g := &gen{r: rand.New(rand.NewPCG(3, 4))}
	for range 200000 {
		g.b.Reset()
		g.float()
		text := g.b.String()
		want, werr := strconv.ParseFloat(text, 64)
		got, end, err := parseFloat([]byte(text+","), 0)
		if werr != nil {
			if err != errRange {
				t.Fatalf("parseFloat(%s) = %v, %v; strconv says %v", text, got, err, werr)
			}
			continue
		}
		if err != nil || end != len(text) || math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("parseFloat(%s) = %v (end %d), %v; want %v", text, got, end, err, want)
		}
	}
}
