package decode

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wagg/wagg/abi"
)

// fuzzSchemas cover every type, required and optional fields, a key longer
// than a word, two fields on one key, the raw column, and no fields at all
// (the decoder as a pure validator).
var fuzzSchemas = []*abi.Schema{
	schema(true, intField("i"), floatField("f"), stringField("s"),
		optional(intField("o")), optional(abi.Field{Name: "long", Type: abi.String, Path: "long_key_name"})),
	schema(true, optional(intField("i")), optional(floatField("f")), optional(stringField("s")),
		optional(abi.Field{Name: "s2", Type: abi.String, Path: "s"}), optional(abi.Field{Name: "e", Type: abi.Float64, Path: "é"}),
		optional(abi.Field{Name: "l1", Type: abi.Int64, Path: "long_key_name_12"})),
	schema(true),
}

var fuzzSeeds = []string{
	`{"i":1,"f":2.5,"s":"x"}`,
	`{"i":-9223372036854775808,"f":1e308,"s":"\u00e9\uD83D\uDE00","o":3,"long_key_name":"\n"}`,
	`{"i":0,"f":-0.0,"s":"\"\\\/\b\f\n\r\t\u0041\u00DF\ud800x\udc00\ud83d\ude00"}`,
	`{"poll_id":1234,"option":"opt3","user_id":"u-8812771","ts":1764212345678}`,
	` {"i" : 0 , "f" : -0 , "s" : "" , "x" : [ {}, [], null, true, false, "\"" ] } `,
	`{"i":1,"f":2,"s":"a","i":2}`,
	`{"i":1.0,"f":"2","s":3}`,
	`{"i":null,"f":null,"s":null,"é":0.1}`,
	`{"\u0069":7,"f":1E-7,"s":"\ud800"}`,
	`{"i":99999999999999999999,"f":1e999,"s":"\x"}`,
	`{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	`{"i":1,"f":2,"s":"a"}x`,
	`{"i":1,"f":2,"s":"a",}`,
	"{\"s\":\"\xff\"}",
	`[1]`,
	``,
	`{`,
	`{"f":123456789012345678901234567890e-10,"i":12345678,"s":"12345678"}`,
	// Several records, split at NUL bytes, so that the keys of one are the
	// predictions for the next.
	"{\"long_key_name\":\"a\",\"i\":1,\"f\":1,\"s\":\"\"}\x00{\"long_key_namf\":\"b\",\"i\":2,\"f\":2,\"s\":\"\"}",
	"{\"long_key_name_12\":1,\"i\":1,\"f\":1,\"s\":\"\"}\x00{\"long_key_name_13\":2,\"i\":1,\"f\":1,\"s\":\"\"}\x00{\"long_key_name\":\"x\",\"i\":1,\"f\":1,\"s\":\"\"}",
	"{\"i\":1,\"f\":1,\"s\":\"a\",\"o\":5}\x00{\"i\":1,\"f\":1,\"s\":\"a\",\"o\" :5}\x00{\"i\":1,\"f\":1,\"s\":\"a\",\"oo\":5}",
}

// maxRecords is how many records one fuzz input makes at most.
const maxRecords = 3

func FuzzDecoder(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	good := []byte(`{"i":11,"f":0.25,"s":"good","o":4,"long_key_name":"kept"}`)
	f.Fuzz(func(t *testing.T, data []byte) {
		// NUL is never part of a valid JSON text, so splitting there costs
		// the fuzzer nothing and lets it play records against each other.
		values := bytes.SplitN(data, []byte{0}, maxRecords)
		for si, s := range fuzzSchemas {
			d := New(s)
			if err := d.Add(good, 1); err != nil {
				t.Fatalf("schema %d: good record: %v", si, err)
			}
			first := recordAt(s, d.Batch(), 0)
			for _, v := range values {
				checkOne(t, si, s, d, v)
			}
			// The good record again, after whatever the input taught the
			// decoder to expect.
			if err := d.Add(good, 1); err != nil {
				t.Fatalf("schema %d: good record after %q: %v", si, data, err)
			}
			if last := recordAt(s, d.Batch(), d.Len()-1); !equalRecords([]record{last}, []record{first}) {
				t.Fatalf("schema %d: good record after %q = %+v, want %+v", si, data, last, first)
			}
			roundTrip(t, s, d.Batch())
		}
	})
}

// checkOne adds one value and checks the outcome against encoding/json.
func checkOne(t *testing.T, si int, s *abi.Schema, d *Decoder, v []byte) {
	t.Helper()
	objectOK := json.Valid(v) && firstNonSpace(v) == '{'
	before := records(s, d.Batch())
	err := d.Add(v, 2)
	if err != nil {
		checkRejection(t, si, s, v, err, objectOK)
		if got := records(s, d.Batch()); !equalRecords(got, before) {
			t.Fatalf("schema %d: Add(%q) failed with %v but changed the batch", si, v, err)
		}
		return
	}
	if !objectOK {
		t.Fatalf("schema %d: Add(%q) accepted what encoding/json rejects", si, v)
	}
	compareWithEncodingJSON(t, si, s, v, recordAt(s, d.Batch(), d.Len()-1))
}

func firstNonSpace(b []byte) byte {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 {
		return t[0]
	}
	return 0
}

// checkRejection checks that a value encoding/json accepts is only rejected
// for the rules that are stricter on purpose.
func checkRejection(t *testing.T, si int, s *abi.Schema, data []byte, err error, objectOK bool) {
	t.Helper()
	msg := err.Error()
	if strings.Contains(msg, "invalid UTF-8") && utf8.Valid(data) {
		t.Fatalf("schema %d: Add(%q): %v, but it is valid UTF-8", si, data, err)
	}
	if !objectOK {
		return
	}
	switch {
	case strings.HasPrefix(msg, `field "`) && len(s.Input) > 0:
	case strings.Contains(msg, "invalid UTF-8"):
	case strings.Contains(msg, "nested deeper than") && bytes.Count(data, []byte("["))+bytes.Count(data, []byte("{")) > MaxDepth:
	default:
		t.Fatalf("schema %d: Add(%q) = %v, but encoding/json accepts it", si, data, err)
	}
}

// compareWithEncodingJSON checks a decoded record against what encoding/json
// reads from the same value. Declared keys are never duplicated in an
// accepted record, so its last-one-wins map agrees with the decoder.
func compareWithEncodingJSON(t *testing.T, si int, s *abi.Schema, data []byte, r record) {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("schema %d: encoding/json cannot decode %q: %v", si, data, err)
	}
	if r.ts != 2 || (s.Raw && r.raw != string(data)) {
		t.Fatalf("schema %d: record %+v, want ts 2 and raw %q", si, r, data)
	}
	for j, f := range s.Input {
		jv, present := m[f.JSONPath()]
		got := r.values[j]
		if !present || jv == nil {
			if !f.Optional {
				t.Fatalf("schema %d: Add(%q) accepted a missing or null %s", si, data, f.Name)
			}
			if zero := map[abi.Type]any{abi.Int64: int64(0), abi.Float64: 0.0, abi.String: ""}[f.Type]; got != zero || math.Signbit(toFloat(got)) {
				t.Fatalf("schema %d: %q: %s = %#v, want the zero value", si, data, f.Name, got)
			}
			continue
		}
		switch f.Type {
		case abi.Int64:
			n, ok := jv.(json.Number)
			want, err := strconv.ParseInt(string(n), 10, 64)
			if !ok || err != nil || got != want {
				t.Fatalf("schema %d: %q: %s = %#v, encoding/json has %#v", si, data, f.Name, got, jv)
			}
		case abi.Float64:
			n, ok := jv.(json.Number)
			want, err := strconv.ParseFloat(string(n), 64)
			if !ok || err != nil || math.Float64bits(got.(float64)) != math.Float64bits(want) {
				t.Fatalf("schema %d: %q: %s = %#v, encoding/json has %#v", si, data, f.Name, got, jv)
			}
		case abi.String:
			if want, ok := jv.(string); !ok || got != want {
				t.Fatalf("schema %d: %q: %s = %q, encoding/json has %#v", si, data, f.Name, got, jv)
			}
		}
	}
}

func toFloat(v any) float64 {
	f, _ := v.(float64)
	return f
}

func equalRecords(a, b []record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ts != b[i].ts || a[i].raw != b[i].raw || len(a[i].values) != len(b[i].values) {
			return false
		}
		for j := range a[i].values {
			if x, ok := a[i].values[j].(float64); ok {
				if math.Float64bits(x) != math.Float64bits(b[i].values[j].(float64)) {
					return false
				}
			} else if a[i].values[j] != b[i].values[j] {
				return false
			}
		}
	}
	return true
}

// roundTrip checks that the batch encodes and decodes through the ABI.
func roundTrip(t *testing.T, s *abi.Schema, b *abi.Batch) {
	t.Helper()
	buf, err := abi.NewBatchEncoder(s).Encode(b)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	var types []abi.Type
	for _, f := range s.Input {
		types = append(types, f.Type)
	}
	var back abi.Batch
	if err := abi.DecodeBatch(buf, types, s.Raw, &back); err != nil {
		t.Fatalf("DecodeBatch: %v", err)
	}
	if !equalRecords(records(s, &back), records(s, b)) {
		t.Fatalf("the batch changed in the ABI round trip")
	}
}
