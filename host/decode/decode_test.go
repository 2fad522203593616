package decode

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
)

func schema(raw bool, fields ...abi.Field) *abi.Schema {
	return &abi.Schema{ABI: abi.Version, Input: fields, Raw: raw}
}

func intField(name string) abi.Field    { return abi.Field{Name: name, Type: abi.Int64} }
func floatField(name string) abi.Field  { return abi.Field{Name: name, Type: abi.Float64} }
func stringField(name string) abi.Field { return abi.Field{Name: name, Type: abi.String} }

func optional(f abi.Field) abi.Field { f.Optional = true; return f }

// record is one decoded record in plain Go values, for comparisons.
type record struct {
	ts     int64
	values []any
	raw    string
}

// records reads a batch back into records.
func records(s *abi.Schema, b *abi.Batch) []record {
	var out []record
	for i := range b.Len() {
		out = append(out, recordAt(s, b, i))
	}
	return out
}

// recordAt reads record i of a batch.
func recordAt(s *abi.Schema, b *abi.Batch, i int) record {
	r := record{ts: b.Times[i]}
	for j, f := range s.Input {
		c := &b.Columns[j]
		switch f.Type {
		case abi.Int64:
			r.values = append(r.values, c.Ints[i])
		case abi.Float64:
			r.values = append(r.values, c.Floats[i])
		case abi.String:
			r.values = append(r.values, string(c.Str(i)))
		}
	}
	if b.Raw != nil {
		r.raw = string(b.Raw.Str(i))
	}
	return r
}

// decodeOne adds value to a fresh decoder for s and returns the values of
// the record, or the error.
func decodeOne(t *testing.T, s *abi.Schema, value string) ([]any, error) {
	t.Helper()
	d := New(s)
	err := d.Add([]byte(value), 42)
	if err != nil {
		if d.Len() != 0 {
			t.Fatalf("Add(%s) failed with %v but the batch holds %d records", value, err, d.Len())
		}
		return nil, err
	}
	rs := records(s, d.Batch())
	if len(rs) != 1 || rs[0].ts != 42 {
		t.Fatalf("Add(%s): batch holds %+v, want one record at ts 42", value, rs)
	}
	return rs[0].values, nil
}

type okCase struct {
	name  string
	value string
	want  []any
}

func runOK(t *testing.T, s *abi.Schema, cases []okCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeOne(t, s, tc.value)
			if err != nil {
				t.Fatalf("Add(%s): %v", tc.value, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Add(%s) = %#v, want %#v", tc.value, got, tc.want)
			}
		})
	}
}

type errCase struct {
	name  string
	value string
	want  string // the error message, or a part of it after "..."
}

func runErr(t *testing.T, s *abi.Schema, cases []errCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeOne(t, s, tc.value)
			if err == nil {
				t.Fatalf("Add(%q) succeeded, want error %q", tc.value, tc.want)
			}
			if part, ok := strings.CutPrefix(tc.want, "..."); ok {
				if !strings.Contains(err.Error(), part) {
					t.Fatalf("Add(%q) error %q, want it to contain %q", tc.value, err, part)
				}
			} else if err.Error() != tc.want {
				t.Fatalf("Add(%q) error\n  %q\nwant\n  %q", tc.value, err, tc.want)
			}
		})
	}
}

var voteSchema = schema(false, intField("poll_id"), stringField("option"), stringField("user_id"), intField("ts"))

func TestDecoder_DecodesDeclaredFields(t *testing.T) {
	runOK(t, voteSchema, []okCase{
		{"vote", `{"poll_id":1234,"option":"opt3","user_id":"u-8812771","ts":1764212345678}`,
			[]any{int64(1234), "opt3", "u-8812771", int64(1764212345678)}},
		{"any key order", `{"ts":5,"user_id":"u","option":"o","poll_id":-7}`,
			[]any{int64(-7), "o", "u", int64(5)}},
		{"undeclared keys skipped", `{"x":{"a":[1,2,{"b":null}]},"poll_id":1,"y":[],"option":"","z":"\"}","user_id":"u","ts":0,"w":true}`,
			[]any{int64(1), "", "u", int64(0)}},
		{"whitespace everywhere", " \t\r\n{ \"poll_id\" : 1 ,\n\"option\"\t:\t\"a b\" , \"user_id\":\"u\",\"ts\":2 }\n ",
			[]any{int64(1), "a b", "u", int64(2)}},
		{"long strings", `{"poll_id":1,"option":"` + strings.Repeat("abcdefghij", 20) + `","user_id":"ü-ñ-日本","ts":3}`,
			[]any{int64(1), strings.Repeat("abcdefghij", 20), "ü-ñ-日本", int64(3)}},
	})
}

func TestDecoder_RejectsValuesThatAreNotOneObject(t *testing.T) {
	s := schema(true)
	runErr(t, s, []errCase{
		{"empty", ``, `not a JSON object`},
		{"only whitespace", " \n", `not a JSON object`},
		{"array", `[{"a":1}]`, `not a JSON object`},
		{"string", `"{}"`, `not a JSON object`},
		{"number", `12`, `not a JSON object`},
		{"null", `null`, `not a JSON object`},
		{"byte order mark", "\xef\xbb\xbf{}", `not a JSON object`},
		{"two objects", `{}{}`, `invalid JSON at byte 2: '{' after the object`},
		{"trailing comma", `{},`, `invalid JSON at byte 2: ',' after the object`},
		{"trailing garbage after space", "{\"a\":1} x", `invalid JSON at byte 8: 'x' after the object`},
		{"trailing NUL", "{}\x00", `invalid JSON at byte 2: byte 0x00 after the object`},
		{"unclosed", `{"a":1`, `...want ',' or '}' after an object member, got end of input`},
		{"unclosed after 8 digits", `{"a":12345678`, `invalid JSON at byte 13: want ',' or '}' after an object member, got end of input`},
		{"unclosed after 16 digits", `{"a":1234567812345678`, `invalid JSON at byte 21: want ',' or '}' after an object member, got end of input`},
		{"unclosed after 7 digits", `{"a":1234567`, `invalid JSON at byte 12: want ',' or '}' after an object member, got end of input`},
		{"truncated after colon", `{"a":`, `...want a value, got end of input`},
		{"missing colon", `{"a" 1}`, `...want ':' after a key, got '1'`},
		{"unquoted key", `{a:1}`, `...want a key, got 'a'`},
		{"trailing comma in object", `{"a":1,}`, `...want a key, got '}'`},
		{"single quotes", `{'a':1}`, `...want a key, got '\''`},
		{"non-space whitespace", "{\"a\":1,\v\"b\":2}", `...want a key, got byte 0x0b`},
	})
}

func TestDecoder_ValidatesSkippedValues(t *testing.T) {
	s := schema(false, optional(intField("a")))
	ok := []okCase{
		{"nested", `{"x":{"y":[1,-2.5e+3,"s",true,false,null,{},[],[[]],{"z":{}}]},"a":1}`, []any{int64(1)}},
		{"escapes in skipped string", `{"x":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00\ud800","a":1}`, []any{int64(1)}},
		{"numbers", `{"x":[0,-0,0.0,1e5,1E-5,1e+5,-1.25e-300,123456789012345678901234567890],"a":1}`, []any{int64(1)}},
		{"spaces in containers", "{\"x\" : [ 1 , { \"y\" : 2 } ] , \"a\" : 1 }", []any{int64(1)}},
		{"empty containers with space", `{"x":[ ],"y":{ },"a":1}`, []any{int64(1)}},
	}
	runOK(t, s, ok)
	runErr(t, s, []errCase{
		{"trailing comma in array", `{"x":[1,],"a":1}`, `...want a value, got ']'`},
		{"trailing comma in nested object", `{"x":{"y":1,},"a":1}`, `...want a key, got '}'`},
		{"missing comma in array", `{"x":[1 2],"a":1}`, `...want ',' or ']', got '2'`},
		{"mismatched bracket", `{"x":[1},"a":1}`, `...want ',' or ']', got '}'`},
		{"mismatched brace", `{"x":{"y":1],"a":1}`, `...want ',' or '}', got ']'`},
		{"unclosed array", `{"x":[1,2`, `...got end of input`},
		{"leading zero", `{"x":01,"a":1}`, `...want ',' or '}' after an object member, got '1'`},
		{"plus sign", `{"x":+1,"a":1}`, `...want a value, got '+'`},
		{"bare fraction", `{"x":.5,"a":1}`, `...want a value, got '.'`},
		{"dot without digits", `{"x":1.,"a":1}`, `...want a digit, got ','`},
		{"exponent without digits", `{"x":1e,"a":1}`, `...want a digit, got ','`},
		{"exponent sign without digits", `{"x":1e+,"a":1}`, `...want a digit, got ','`},
		{"minus alone", `{"x":-,"a":1}`, `...want a digit, got ','`},
		{"hex", `{"x":0x10,"a":1}`, `...got 'x'`},
		{"NaN", `{"x":NaN,"a":1}`, `...want a value, got 'N'`},
		{"Infinity", `{"x":-Infinity,"a":1}`, `...want a digit, got 'I'`},
		{"truncated true", `{"x":tru}`, `...want a value, got 't'`},
		{"capital True", `{"x":True}`, `...want a value, got 'T'`},
		{"nul literal", `{"x":nul}`, `...want a value, got 'n'`},
		{"bad escape", `{"x":"\a","a":1}`, `invalid JSON at byte 6: invalid escape "\\a"`},
		{"short unicode escape", `{"x":"\u12","a":1}`, `...invalid escape "\\u12\","`},
		{"non-hex unicode escape", `{"x":"\u12g4","a":1}`, `...invalid escape "\\u12g4"`},
		{"raw newline in string", "{\"x\":\"a\nb\",\"a\":1}", `invalid JSON at byte 7: control character 0x0a in a string`},
		{"raw tab in string", "{\"x\":\"a\tb\",\"a\":1}", `...control character 0x09 in a string`},
		{"unterminated string", `{"x":"abc`, `...unterminated string`},
		{"escape at end", `{"x":"abc\`, `...unterminated string`},
		{"invalid UTF-8", "{\"x\":\"\xff\",\"a\":1}", `invalid JSON at byte 6: invalid UTF-8`},
		{"truncated UTF-8", "{\"x\":\"\xc3\",\"a\":1}", `...invalid UTF-8`},
		{"overlong UTF-8", "{\"x\":\"\xc0\xaf\",\"a\":1}", `...invalid UTF-8`},
		{"UTF-8 surrogate", "{\"x\":\"\xed\xa0\x80\",\"a\":1}", `...invalid UTF-8`},
		{"invalid UTF-8 in key", "{\"\xff\":1,\"a\":1}", `...invalid UTF-8`},
		{"bad escape in key", `{"\q":1,"a":1}`, `...invalid escape`},
		{"byte outside strings", "{\"a\":1,\xc3\xa9}", `...want a key, got byte 0xc3`},
	})
}

func TestDecoder_LimitsNestingDepth(t *testing.T) {
	s := schema(false, optional(intField("a")))
	nest := func(n int) string { // n levels, the top object included
		return `{"x":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `,"a":1}`
	}
	if _, err := decodeOne(t, s, nest(MaxDepth)); err != nil {
		t.Fatalf("%d levels: %v", MaxDepth, err)
	}
	deepObjects := `{"x":` + strings.Repeat(`{"y":`, MaxDepth-1) + `1` + strings.Repeat("}", MaxDepth-1) + `}`
	if _, err := decodeOne(t, s, deepObjects); err != nil {
		t.Fatalf("%d levels of objects: %v", MaxDepth, err)
	}
	runErr(t, s, []errCase{
		{"one level too many", nest(MaxDepth + 1), fmt.Sprintf("invalid JSON at byte %d: nested deeper than %d", 5+MaxDepth-1, MaxDepth)},
		{"objects one level too many", `{"x":` + strings.Repeat(`{"y":`, MaxDepth) + `1` + strings.Repeat("}", MaxDepth) + `}`, "...nested deeper than 64"},
		{"a million levels", `{"x":` + strings.Repeat("[", 1e6), "...nested deeper than 64"},
	})
}

func TestDecoder_RejectsDuplicateDeclaredKey(t *testing.T) {
	s := schema(false, intField("a"), optional(stringField("b")))
	runErr(t, s, []errCase{
		{"same value", `{"a":1,"a":1}`, `field "a": duplicate key`},
		{"escaped twin", `{"a":1,"\u0061":2}`, `field "a": duplicate key`},
		{"null then value", `{"b":null,"b":"x","a":1}`, `field "b": duplicate key`},
	})
	runOK(t, s, []okCase{
		{"undeclared duplicates are not looked at", `{"x":1,"x":2,"a":3}`, []any{int64(3), ""}},
	})
}

func TestDecoder_MatchesEscapedKeys(t *testing.T) {
	s := schema(false, intField("poll_id"), stringField("option"),
		abi.Field{Name: "odd", Type: abi.Int64, Path: "q\"é\\"},
		abi.Field{Name: "long", Type: abi.Int64, Path: "a_rather_long_key"})
	runOK(t, s, []okCase{
		{"escaped underscore", `{"poll\u005fid":1,"opti\u006fn":"x","q\"\u00e9\\":2,"a_rather_long_k\u0065y":3}`,
			[]any{int64(1), "x", int64(2), int64(3)}},
		{"raw UTF-8 key", `{"poll_id":1,"option":"x","q\"é\\":2,"a_rather_long_key":3}`,
			[]any{int64(1), "x", int64(2), int64(3)}},
	})
	runErr(t, s, []errCase{
		{"prefix is not the key", `{"poll_i":1,"option":"x","q\"é\\":2,"a_rather_long_key":3}`, `field "poll_id": missing`},
		{"longer is not the key", `{"poll_idd":1,"option":"x","q\"é\\":2,"a_rather_long_key":3}`, `field "poll_id": missing`},
		{"case matters", `{"Poll_id":1,"option":"x","q\"é\\":2,"a_rather_long_key":3}`, `field "poll_id": missing`},
		{"long key with a typo", `{"poll_id":1,"option":"x","q\"é\\":2,"a_rather_long_kez":3}`, `field "long" (key "a_rather_long_key"): missing`},
	})
}

// TestDecoder_MatchesKeysAtTheEndOfTheBuffer covers the word comparison of
// short keys when fewer than eight bytes follow the key.
func TestDecoder_MatchesKeysAtTheEndOfTheBuffer(t *testing.T) {
	s := schema(false, optional(intField("a")), optional(intField("abcdefgh")))
	for _, v := range []string{`{"x":{"a":1},"a":2}`, `{"a":2}`, `{"abcdefgh":5,"a":2}`} {
		d := New(s)
		b := []byte(v)
		if err := d.Add(b[:len(b):len(b)], 0); err != nil {
			t.Fatalf("Add(%s): %v", v, err)
		}
		if got := d.Batch().Columns[0].Ints[0]; got != 2 {
			t.Fatalf("Add(%s): a = %d, want 2", v, got)
		}
	}
}

func TestDecoder_DecodesIntegers(t *testing.T) {
	s := schema(false, intField("n"))
	for _, n := range []int64{0, 1, -1, 9, 10, 99999999, 100000000, -123456789, 1764212345678,
		math.MaxInt64, math.MinInt64, math.MaxInt64 - 1, math.MinInt64 + 1, 1234567890123456789} {
		runOK(t, s, []okCase{{strconv.FormatInt(n, 10), fmt.Sprintf(`{"n":%d}`, n), []any{n}}})
	}
	runOK(t, s, []okCase{{"minus zero", `{"n":-0}`, []any{int64(0)}}})
}

// TestDecoder_ReadsNumbersThatEndTheBuffer covers the digit scanner's
// last, partial word.
func TestDecoder_ReadsNumbersThatEndTheBuffer(t *testing.T) {
	s := schema(false, intField("n"))
	for _, digits := range []string{"1", "1234567", "12345678", "123456789", "1234567812345678", "12345678123456789"} {
		for _, shape := range []string{`{"n":%s}`, `{"n":%s`, `{"x":%s,"n":1}`, `{"x":%s`} {
			v := []byte(fmt.Sprintf(shape, digits))
			d := New(s)
			err := d.Add(v[:len(v):len(v)], 0)
			want, _ := strconv.ParseInt(digits, 10, 64)
			switch {
			case shape[len(shape)-1] != '}':
				if err == nil || !strings.Contains(err.Error(), "end of input") {
					t.Errorf("Add(%s) = %v, want an error at the end of input", v, err)
				}
			case err != nil:
				t.Errorf("Add(%s): %v", v, err)
			case shape[2] == 'n' && d.Batch().Columns[0].Ints[0] != want:
				t.Errorf("Add(%s) = %d, want %s", v, d.Batch().Columns[0].Ints[0], digits)
			}
		}
	}
}

func TestDecoder_RejectsFloatForIntField(t *testing.T) {
	s := schema(false, intField("n"))
	runErr(t, s, []errCase{
		{"fraction", `{"n":1.5}`, `field "n": want an integer, got 1.5`},
		{"whole fraction", `{"n":1.0}`, `field "n": want an integer, got 1.0`},
		{"exponent", `{"n":1e3}`, `field "n": want an integer, got 1e3`},
		{"negative exponent", `{"n":-2E-1}`, `field "n": want an integer, got -2E-1`},
		{"zero fraction", `{"n":0.0}`, `field "n": want an integer, got 0.0`},
		{"malformed fraction", `{"n":1.}`, `invalid JSON at byte 7: want a digit, got '}'`},
	})
}

func TestDecoder_RejectsIntegersOutOfRange(t *testing.T) {
	s := schema(false, intField("n"))
	runErr(t, s, []errCase{
		{"max plus one", `{"n":9223372036854775808}`, `field "n": want an integer in int64 range, got 9223372036854775808`},
		{"min minus one", `{"n":-9223372036854775809}`, `field "n": want an integer in int64 range, got -9223372036854775809`},
		{"uint64 max", `{"n":18446744073709551615}`, `...want an integer in int64 range`},
		{"twenty digits", `{"n":99999999999999999999}`, `...want an integer in int64 range`},
		{"long", `{"n":` + strings.Repeat("1", 60) + `}`, `field "n": want an integer in int64 range, got ` + strings.Repeat("1", 40) + `...`},
		{"wraps to small", `{"n":18446744073709551617}`, `...want an integer in int64 range`},
	})
}

func TestDecoder_RejectsOtherTypesForIntField(t *testing.T) {
	s := schema(false, intField("poll_id"))
	runErr(t, s, []errCase{
		{"string", `{"poll_id":"abc"}`, `field "poll_id": want an integer, got "abc"`},
		{"string of digits", `{"poll_id":"42"}`, `field "poll_id": want an integer, got "42"`},
		{"true", `{"poll_id":true}`, `field "poll_id": want an integer, got true`},
		{"false", `{"poll_id":false}`, `field "poll_id": want an integer, got false`},
		{"null", `{"poll_id":null}`, `field "poll_id": want an integer, got null`},
		{"object", `{"poll_id":{"v":1}}`, `field "poll_id": want an integer, got an object`},
		{"array", `{"poll_id":[1]}`, `field "poll_id": want an integer, got an array`},
		{"long string is cut", `{"poll_id":"` + strings.Repeat("é", 30) + `"}`, `field "poll_id": want an integer, got "` + strings.Repeat("é", 19) + `...`},
		{"malformed string", `{"poll_id":"\x"}`, `...invalid escape`},
		{"garbage", `{"poll_id":x}`, `invalid JSON at byte 11: want a value, got 'x'`},
	})
}

func TestDecoder_DecodesFloats(t *testing.T) {
	s := schema(false, floatField("f"))
	for _, text := range []string{
		"0", "-0", "1", "-1", "0.1", "1.5", "3.141592653589793", "1e10", "1E-10", "2.5e+3",
		"123456789012345678", "12345678901234567890123", "0.000001", "1e22", "1e23", "1e-22",
		"9007199254740993", "4.9e-324", "5e-325", "1e-400", "2.2250738585072014e-308",
		"1.7976931348623157e308", "0.1e-5", "100000000000000000000000000000000000001e-38",
		"0." + strings.Repeat("0", 30) + "1", "1" + strings.Repeat("0", 30) + ".5", "0e999999999",
	} {
		want, err := strconv.ParseFloat(text, 64)
		if err != nil {
			t.Fatalf("ParseFloat(%s): %v", text, err)
		}
		got, err := decodeOne(t, s, `{"f":`+text+`}`)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if g := got[0].(float64); math.Float64bits(g) != math.Float64bits(want) {
			t.Errorf("%s = %v, want %v", text, g, want)
		}
	}
}

func TestDecoder_RejectsFloatsOutOfRange(t *testing.T) {
	s := schema(false, floatField("f"))
	runErr(t, s, []errCase{
		{"huge", `{"f":1e400}`, `field "f": want a number in float64 range, got 1e400`},
		{"huge negative", `{"f":-1.8e308}`, `field "f": want a number in float64 range, got -1.8e308`},
	})
}

func TestDecoder_RejectsOtherTypesForFloatField(t *testing.T) {
	s := schema(false, floatField("f"))
	runErr(t, s, []errCase{
		{"string", `{"f":"1.5"}`, `field "f": want a number, got "1.5"`},
		{"NaN string", `{"f":"NaN"}`, `field "f": want a number, got "NaN"`},
		{"bool", `{"f":true}`, `field "f": want a number, got true`},
		{"null", `{"f":null}`, `field "f": want a number, got null`},
		{"array", `{"f":[1.5]}`, `field "f": want a number, got an array`},
		{"malformed", `{"f":1.5.5}`, `...want ',' or '}' after an object member, got '.'`},
		{"malformed exponent", `{"f":1e}`, `...want a digit, got '}'`},
		{"minus alone", `{"f":-}`, `...want a digit, got '}'`},
	})
}

func TestDecoder_UnescapesStrings(t *testing.T) {
	s := schema(false, stringField("s"))
	runOK(t, s, []okCase{
		{"plain", `{"s":"hello"}`, []any{"hello"}},
		{"empty", `{"s":""}`, []any{""}},
		{"short escapes", `{"s":"\"\\\/\b\f\n\r\t"}`, []any{"\"\\/\b\f\n\r\t"}},
		{"unicode escapes", `{"s":"\u0041\u00e9\u65e5\u0000"}`, []any{"Aé日\x00"}},
		{"upper-case hex", `{"s":"\u00E9\u00c9"}`, []any{"éÉ"}},
		{"surrogate pair", `{"s":"\uD83D\uDE00"}`, []any{"😀"}},
		{"lone high surrogate", `{"s":"a\uD83Db"}`, []any{"a\uFFFDb"}},
		{"lone low surrogate", `{"s":"\uDE00"}`, []any{"\uFFFD"}},
		{"high then non-surrogate escape", `{"s":"\uD83D\u0041"}`, []any{"\uFFFDA"}},
		{"two highs then low", `{"s":"\uD83D\uD83D\uDE00"}`, []any{"\uFFFD😀"}},
		{"high at end", `{"s":"\uD83D"}`, []any{"\uFFFD"}},
		{"high then short escape", `{"s":"\uD83D\n"}`, []any{"\uFFFD\n"}},
		{"raw UTF-8", `{"s":"żółć 日本 😀"}`, []any{"żółć 日本 😀"}},
		{"escapes between long runs", `{"s":"` + strings.Repeat("a", 17) + `\n` + strings.Repeat("b", 17) + `"}`,
			[]any{strings.Repeat("a", 17) + "\n" + strings.Repeat("b", 17)}},
		{"DEL is plain", "{\"s\":\"\x7f\"}", []any{"\x7f"}},
	})
}

func TestDecoder_RejectsMalformedStrings(t *testing.T) {
	s := schema(false, stringField("s"))
	runErr(t, s, []errCase{
		{"bad escape", `{"s":"\x41"}`, `invalid JSON at byte 6: invalid escape "\\x"`},
		{"escaped single quote", `{"s":"\'"}`, `...invalid escape "\\'"`},
		{"short unicode", `{"s":"\u00"}`, `...invalid escape "\\u00\"}"`},
		{"control character", "{\"s\":\"\x01\"}", `invalid JSON at byte 6: control character 0x01 in a string`},
		{"invalid UTF-8", "{\"s\":\"ab\xfe\"}", `invalid JSON at byte 8: invalid UTF-8`},
		{"invalid UTF-8 after escape", "{\"s\":\"\\n\xfe\"}", `...invalid UTF-8`},
		{"unterminated", `{"s":"abc`, `invalid JSON at byte 9: unterminated string`},
	})
}

// The string fields of a record make group keys, which the host caps: a
// record past it is refused alone, the records around it decode.
func TestDecoder_RefusesStringFieldsPastTheKeyCap(t *testing.T) {
	s := schema(false, stringField("a"), stringField("b"), optional(stringField("c")))
	half := strings.Repeat("x", MaxStringBytes/2)
	d := New(s)
	for i, c := range []struct {
		value string
		ok    bool
	}{
		{`{"a":"` + half + `","b":"` + half + `"}`, true},
		{`{"a":"` + half + `","b":"` + half + `y"}`, false},
		{`{"a":"","b":"` + strings.Repeat(`\u0041`, MaxStringBytes+1) + `"}`, false}, // counted unescaped
		{`{"a":"1","b":"2","c":"3"}`, true},
	} {
		err := d.Add([]byte(c.value), 0)
		if c.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), fmt.Sprintf("at most %d", MaxStringBytes)) {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if got := records(s, d.Batch()); len(got) != 2 || !reflect.DeepEqual(got[1].values, []any{"1", "2", "3"}) {
		t.Fatalf("decoded %d records, want the first and the last: %v", len(got), got[1:])
	}
}

func TestDecoder_RejectsOtherTypesForStringField(t *testing.T) {
	s := schema(false, stringField("option"))
	runErr(t, s, []errCase{
		{"number", `{"option":3}`, `field "option": want a string, got 3`},
		{"bool", `{"option":false}`, `field "option": want a string, got false`},
		{"null", `{"option":null}`, `field "option": want a string, got null`},
		{"object", `{"option":{}}`, `field "option": want a string, got an object`},
	})
}

func TestDecoder_NullAndMissingFields(t *testing.T) {
	s := schema(false, optional(intField("i")), optional(floatField("f")), optional(stringField("s")), intField("r"))
	runOK(t, s, []okCase{
		{"all missing but required", `{"r":1}`, []any{int64(0), 0.0, "", int64(1)}},
		{"optional nulls", `{"i":null,"f":null,"s":null,"r":1}`, []any{int64(0), 0.0, "", int64(1)}},
		{"all present", `{"i":2,"f":2.5,"s":"x","r":1}`, []any{int64(2), 2.5, "x", int64(1)}},
	})
	runErr(t, s, []errCase{
		{"required missing", `{"i":1}`, `field "r": missing`},
		{"required null", `{"r":null}`, `field "r": want an integer, got null`},
		{"empty object", `{}`, `field "r": missing`},
		{"optional of wrong type", `{"i":"1","r":1}`, `field "i": want an integer, got "1"`},
	})
}

func TestDecoder_ErrorsNameTheFieldByNameAndKey(t *testing.T) {
	s := schema(false, abi.Field{Name: "poll", Type: abi.Int64, Path: "poll_id"})
	runErr(t, s, []errCase{
		{"wrong type", `{"poll_id":"abc"}`, `field "poll" (key "poll_id"): want an integer, got "abc"`},
		{"missing", `{"poll":1}`, `field "poll" (key "poll_id"): missing`},
	})
}

func TestDecoder_KeepsRawValue(t *testing.T) {
	s := schema(true, stringField("s"))
	values := []string{` {"s":"a"} `, "{\"s\":\"\\u00e9\",\n\"x\":[1,2]}"}
	d := New(s)
	for i, v := range values {
		if err := d.Add([]byte(v), int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Add([]byte(`{"s":1}`), 9); err == nil {
		t.Fatal("a bad record was accepted")
	}
	got := records(s, d.Batch())
	want := []record{{0, []any{"a"}, values[0]}, {1, []any{"é"}, values[1]}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestDecoder_RawOnlySchemaValidates(t *testing.T) {
	d := New(schema(true))
	if err := d.Add([]byte(`{"anything":[1,{"goes":null}]}`), 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Add([]byte(`{"bad":[1,}`), 2); err == nil {
		t.Fatal("malformed record accepted")
	}
	if d.Len() != 1 || string(d.Batch().Raw.Str(0)) != `{"anything":[1,{"goes":null}]}` {
		t.Fatalf("batch %+v", records(schema(true), d.Batch()))
	}
}

func TestDecoder_SharedKeyFillsEveryFieldReadingIt(t *testing.T) {
	s := schema(false, stringField("a"), abi.Field{Name: "b", Type: abi.String, Path: "a"}, abi.Field{Name: "c", Type: abi.Int64, Path: "n"})
	runOK(t, s, []okCase{{"both", `{"a":"x\ty","n":3}`, []any{"x\ty", "x\ty", int64(3)}}})
	runErr(t, s, []errCase{{"twice", `{"a":"x","a":"y","n":3}`, `field "a": duplicate key`}})
}

func TestDecoder_WideSchemaFindsEveryKey(t *testing.T) {
	var fields []abi.Field
	var obj strings.Builder
	var want []any
	obj.WriteString(`{"zz":0`)
	for i := range abi.MaxFields {
		name := fmt.Sprintf("field_%02d", i)
		fields = append(fields, intField(name))
		fmt.Fprintf(&obj, `,"%s":%d`, name, i)
		want = append(want, int64(i))
	}
	obj.WriteString(`}`)
	s := schema(false, fields...)
	runOK(t, s, []okCase{{"all", obj.String(), want}})
	runErr(t, s, []errCase{{"one missing", strings.Replace(obj.String(), `"field_63"`, `"field_6"`, 1), `field "field_63": missing`}})
}

// TestDecoder_KeysThatDifferInTheMiddle covers the map that takes over when
// the key table cannot tell two keys apart.
func TestDecoder_KeysThatDifferInTheMiddle(t *testing.T) {
	s := schema(false, abi.Field{Name: "x", Type: abi.Int64, Path: "aaaaaaaa_x_bbbbbbbb"},
		abi.Field{Name: "y", Type: abi.Int64, Path: "aaaaaaaa_y_bbbbbbbb"})
	if d := New(s); d.byKey == nil {
		t.Fatal("the key table claims to tell the keys apart")
	}
	runOK(t, s, []okCase{{"both", `{"aaaaaaaa_y_bbbbbbbb":2,"aaaaaaaa_z_bbbbbbbb":3,"aaaaaaaa_x_bbbbbbbb":1}`, []any{int64(1), int64(2)}}})
	runErr(t, s, []errCase{{"one", `{"aaaaaaaa_x_bbbbbbbb":1,"aaaaaaaa_z_bbbbbbbb":3}`, `field "y" (key "aaaaaaaa_y_bbbbbbbb"): missing`}})
}

func TestDecoder_BadRecordsLeaveTheBatchAsItWas(t *testing.T) {
	s := schema(true, intField("poll_id"), stringField("option"), optional(floatField("w")), optional(stringField("note")))
	in := []struct {
		value string
		ok    bool
	}{
		{`{"poll_id":1,"option":"a","note":"first"}`, true},
		{`{"poll_id":2,"option":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","note":"xyz","w":"bad"}`, false}, // strings appended, then a type error
		{`{"poll_id":3,"option":"c","w":1.5}`, true},
		{`{"option":"dddd","note":"eeee"}`, false}, // missing poll_id, found at the end
		{`{"poll_id":4,"option":"\u00e9\uD83D\uDE00","note":"ok"}`, true},
		{`{"poll_id":5,"option":"fff","note":"gg\q"}`, false}, // bad escape in a string column
		{`{"poll_id":6,"option":"h","x":[}`, false},           // syntax error after the fields
		{`{"poll_id":7,"option":"i"} trailing`, false},
		{``, false},
		{`{"poll_id":8,"option":"j","w":-2e-3}`, true},
	}
	d := New(s)
	var want []record
	for i, r := range in {
		err := d.Add([]byte(r.value), int64(100+i))
		if (err == nil) != r.ok {
			t.Fatalf("Add(%s) = %v, want ok=%v", r.value, err, r.ok)
		}
		if r.ok {
			rs := records(s, d.Batch())
			want = append(want, rs[len(rs)-1])
		}
	}
	got := records(s, d.Batch())
	if !reflect.DeepEqual(got, want) || len(got) != 4 {
		t.Fatalf("batch:\n%+v\nwant the 4 good records:\n%+v", got, want)
	}
	wantValues := [][]any{
		{int64(1), "a", 0.0, "first"},
		{int64(3), "c", 1.5, ""},
		{int64(4), "é😀", 0.0, "ok"},
		{int64(8), "j", -2e-3, ""},
	}
	for i, r := range got {
		if !reflect.DeepEqual(r.values, wantValues[i]) {
			t.Errorf("record %d = %#v, want %#v", i, r.values, wantValues[i])
		}
	}

	// The batch is what the ABI encodes and the guest decodes.
	buf, err := abi.NewBatchEncoder(s).Encode(d.Batch())
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
	if rt := records(s, &back); !reflect.DeepEqual(rt, got) {
		t.Fatalf("after the ABI round trip:\n%+v\nwant\n%+v", rt, got)
	}
}

func TestDecoder_ResetEmptiesTheBatchAndKeepsMemory(t *testing.T) {
	s := schema(true, intField("poll_id"), stringField("option"), floatField("w"))
	d := New(s)
	v := []byte(`{"poll_id":1,"option":"opt1","w":0.5,"user_id":"u-1","ts":1764212345678}`)
	for range 100 {
		if err := d.Add(v, 1); err != nil {
			t.Fatal(err)
		}
	}
	d.Reset()
	if d.Len() != 0 || len(records(s, d.Batch())) != 0 {
		t.Fatalf("Len after Reset = %d", d.Len())
	}
	allocs := testing.AllocsPerRun(10, func() {
		d.Reset()
		for range 100 {
			if err := d.Add(v, 1); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("steady-state decoding allocates %.1f times per batch", allocs)
	}
	if got := records(s, d.Batch()); len(got) != 100 || !reflect.DeepEqual(got[99].values, []any{int64(1), "opt1", 0.5}) {
		t.Fatalf("batch after refill: %d records, last %+v", len(got), got[len(got)-1])
	}
}

func TestDecoder_EmptyBatchEncodes(t *testing.T) {
	s := schema(true, intField("a"), floatField("b"), stringField("c"))
	d := New(s)
	for range 2 {
		if _, err := abi.NewBatchEncoder(s).Encode(d.Batch()); err != nil {
			t.Fatalf("Encode of an empty batch: %v", err)
		}
		d.Reset()
	}
}

func TestDecoder_ReportsAFullBatch(t *testing.T) {
	d := New(schema(false, intField("a")))
	d.batch.Times = make([]int64, abi.MaxBatchRecords)
	err := d.Add([]byte(`{"a":1}`), 0)
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Add to a full batch = %v, want ErrFull", err)
	}
	d.Reset()
	d.size = math.MaxUint32 - 3
	if err := d.Add([]byte(`{"a":1}`), 0); !errors.Is(err, ErrFull) {
		t.Fatalf("Add past 4 GiB = %v, want ErrFull", err)
	}
	d.Reset()
	if err := d.Add([]byte(`{"a":1}`), 0); err != nil {
		t.Fatalf("Add after Reset: %v", err)
	}
}

func TestNew_PanicsOnAnUnvalidatedType(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), `"decimal"`) {
			t.Fatalf("recover() = %v, want a panic naming the type", r)
		}
	}()
	New(schema(false, abi.Field{Name: "x", Type: "decimal"}))
}
