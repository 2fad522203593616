package hub

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"
)

var errorCodes = []string{CodeBadFrame, CodeUnknownType, CodeBadRequest, CodeUnknownAggregator,
	CodeUnknownWindow, CodeUnknownKey, CodeBadKey, CodeAlreadySubscribed}

// FuzzDecodeClientFrame feeds arbitrary client frames through the decoder and
// the filter compiler: they must never panic, must answer with a documented
// code, and a filter they accept must be usable.
func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"subscribe","aggregator":"votes","windows":["total"],"keys":{"poll_id":[1,2]},"resume":{"epoch":"e","seq":41}}`,
		`{"type":"subscribe","aggregator":"votes","keys":{"option":["a"],"poll_id":[1e3]},"panes":2,"interval_ms":250}`,
		`{"type":"ping"}`,
		`{"type":"subscribe"}`,
		`{"type":"subscribe","aggregator":"votes","keys":{"poll_id":["x"]}}`,
		`{"type":"subscribe","aggregator":"votes","keys":{"poll_id":[1.5, 9223372036854775808]}}`,
		`[]`, `null`, `{"type":`, "\xff",
	} {
		f.Add([]byte(s))
	}
	o := (&Options{Logger: quietLogger()}).withDefaults()
	a := newAggState("votes", "e", testSchema, testWindows, &o)
	a.apply(0, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, perr := decodeClientFrame(b)
		if perr != nil {
			if fr != nil {
				t.Fatal("a frame and an error")
			}
			checkError(t, perr)
			return
		}
		if fr.Type == TypePing {
			return
		}
		if fr.Type != TypeSubscribe || fr.Aggregator == "" {
			t.Fatalf("accepted %+v", fr)
		}
		flt, perr := compileFilter(a, &fr.Subscribe)
		if perr != nil {
			checkError(t, perr)
			return
		}
		if flt.windows != nil && len(flt.windows) != len(testWindows) || flt.keys != nil && len(flt.keys) != len(testSchema.Keys) {
			t.Fatalf("filter %+v does not fit the schema", flt)
		}
		a.snapshotRows(flt)
	})
}

func checkError(t *testing.T, e *protoError) {
	t.Helper()
	if !slices.Contains(errorCodes, e.code) {
		t.Fatalf("undocumented code %q", e.code)
	}
	var got Frame
	if err := json.Unmarshal(encodeError(e), &got); err != nil || got.Type != TypeError || got.Code != e.code {
		t.Fatalf("error frame %s does not decode: %v", encodeError(e), err)
	}
}

// FuzzAppendString checks the hand-written JSON string encoder against
// encoding/json.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "opt1", "a\"b\\c\n\t\x00\x1f", "héllo", "\xff\xfe", "\u2028\u2029", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var got, want string
		if err := json.Unmarshal(appendString(nil, s), &got); err != nil {
			t.Fatalf("%q encodes to invalid JSON %s: %v", s, appendString(nil, s), err)
		}
		ref, _ := json.Marshal(s)
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%q decodes to %q, encoding/json's to %q", s, got, want)
		}
	})
}

// FuzzParseSSE feeds arbitrary query strings and Last-Event-ID headers
// through the SSE subscription parser and the filter compiler: no panic, a
// documented code, and what it accepts is within the limits of a frame.
func FuzzParseSSE(f *testing.F) {
	for _, s := range [][2]string{
		{"aggregator=votes&window=total&key.poll_id=1&key.poll_id=2&key.option=a&panes=2&interval_ms=250", "e:41"},
		{"aggregator=votes&key.poll_id=1e3&last_event_id=e%3A7", ""},
		{"aggregator=votes&key.poll_id=x", ""},
		{"aggregator=votes&aggregator=x", ":"},
		{"key.=1&%zz", "e:-1"},
		{"aggregator=votes&token=abc&interval_ms=99999999999999999999", "e:18446744073709551616"},
	} {
		f.Add(s[0], s[1])
	}
	o := (&Options{Logger: quietLogger()}).withDefaults()
	a := newAggState("votes", "e", testSchema, testWindows, &o)
	f.Fuzz(func(t *testing.T, rawQuery, lastEventID string) {
		q, _ := url.ParseQuery(rawQuery)
		s, perr := ParseSSE(q, lastEventID)
		if perr != nil {
			if s != nil {
				t.Fatal("a subscription and an error")
			}
			checkError(t, perr)
			return
		}
		if s.Aggregator == "" || len(s.Windows) > maxFilterWindows || s.IntervalMs < 0 || s.IntervalMs > MaxIntervalMs || s.Panes < 0 {
			t.Fatalf("accepted %+v", s)
		}
		if (lastEventID != "" || q.Has("last_event_id")) && s.Resume == nil {
			t.Fatalf("a last event id and no resume: %+v", s)
		}
		if _, perr := compileFilter(a, s); perr != nil {
			checkError(t, perr)
		}
	})
}
