package abi_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
)

func votesSchema() abi.Schema {
	return abi.Schema{
		ABI:     abi.Version,
		Input:   []abi.Field{{Name: "poll_id", Type: abi.Int64}, {Name: "option", Type: abi.String}},
		Keys:    []abi.Column{{Name: "poll_id", Type: abi.Int64}, {Name: "option", Type: abi.String}},
		Metrics: []abi.Metric{{Name: "votes", Kind: abi.Count, Type: abi.Int64}},
	}
}

func TestSchema_ValidateAcceptsGoodSchemas(t *testing.T) {
	for name, mutate := range map[string]func(*abi.Schema){
		"votes":                      func(*abi.Schema) {},
		"raw only":                   func(s *abi.Schema) { s.Input, s.Raw = nil, true },
		"no keys":                    func(s *abi.Schema) { s.Keys = nil },
		"input and key share a name": func(s *abi.Schema) {},
		"every kind": func(s *abi.Schema) {
			s.Metrics = []abi.Metric{
				{Name: "n", Kind: abi.Count, Type: abi.Int64},
				{Name: "s", Kind: abi.Sum, Type: abi.Int64}, {Name: "sf", Kind: abi.Sum, Type: abi.Float64},
				{Name: "lo", Kind: abi.Min, Type: abi.Int64}, {Name: "lof", Kind: abi.Min, Type: abi.Float64},
				{Name: "hi", Kind: abi.Max, Type: abi.Int64}, {Name: "hif", Kind: abi.Max, Type: abi.Float64},
			}
		},
		"float key and path": func(s *abi.Schema) {
			s.Input = append(s.Input, abi.Field{Name: "lat", Type: abi.Float64, Path: "Latitude", Optional: true})
			s.Keys = append(s.Keys, abi.Column{Name: "lat", Type: abi.Float64})
		},
		"limits": func(s *abi.Schema) {
			s.Input, s.Keys, s.Metrics = nil, nil, nil
			for i := range abi.MaxFields {
				s.Input = append(s.Input, abi.Field{Name: fmt.Sprint("f", i), Type: abi.Int64})
			}
			for i := range abi.MaxKeys {
				s.Keys = append(s.Keys, abi.Column{Name: fmt.Sprint("k", i), Type: abi.String})
			}
			for i := range abi.MaxMetrics {
				s.Metrics = append(s.Metrics, abi.Metric{Name: fmt.Sprint("m", i), Kind: abi.Sum, Type: abi.Float64})
			}
		},
		"long name": func(s *abi.Schema) { s.Input[0].Name = strings.Repeat("a", 63) },
	} {
		s := votesSchema()
		mutate(&s)
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSchema_ValidateNamesTheField(t *testing.T) {
	many := func(n int, f func(i int)) {
		for i := range n {
			f(i)
		}
	}
	for _, c := range []struct {
		name   string
		mutate func(*abi.Schema)
		want   string
	}{
		{"abi version", func(s *abi.Schema) { s.ABI = 2 }, "abi: plugin speaks ABI 2"},
		{"no input", func(s *abi.Schema) { s.Input = nil }, "input: declare at least one field, or raw"},
		{"too many fields", func(s *abi.Schema) {
			many(abi.MaxFields+1, func(i int) { s.Input = append(s.Input, abi.Field{Name: fmt.Sprint("x", i), Type: abi.Int64}) })
		}, "input: 67 fields, at most 64"},
		{"too many keys", func(s *abi.Schema) {
			many(abi.MaxKeys, func(i int) { s.Keys = append(s.Keys, abi.Column{Name: fmt.Sprint("k", i), Type: abi.Int64}) })
		}, "keys: 18 columns, at most 16"},
		{"no metrics", func(s *abi.Schema) { s.Metrics = nil }, "metrics: 0, want 1 to 64"},
		{"state version 0", func(s *abi.Schema) { s.State = &abi.State{} }, "state.version 0"},
		{"accepts a newer state", func(s *abi.Schema) { s.State = &abi.State{Version: 2, Accepts: []int{1, 2}} }, "state.accepts[1] 2: want an older version"},
		{"migrates its own state", func(s *abi.Schema) { s.State = &abi.State{Version: 2, Migrates: []int{2}} }, "state.migrates[0] 2: want an older version"},
		{"accepts and migrates one state", func(s *abi.Schema) { s.State = &abi.State{Version: 3, Accepts: []int{1}, Migrates: []int{2, 1}} }, "state.migrates[1] 1: also in state.accepts"},
		{"too many older states", func(s *abi.Schema) {
			s.State = &abi.State{Version: 100}
			many(64, func(i int) { s.State.Accepts = append(s.State.Accepts, i+1) })
			s.State.Migrates = []int{99}
		}, "state: 65 older versions accepted or migrated, at most 64"},
		{"too many metrics", func(s *abi.Schema) {
			many(abi.MaxMetrics, func(i int) {
				s.Metrics = append(s.Metrics, abi.Metric{Name: fmt.Sprint("m", i), Kind: abi.Count, Type: abi.Int64})
			})
		}, "metrics: 65, want 1 to 64"},
		{"input name upper case", func(s *abi.Schema) { s.Input[1].Name = "Option" }, `input[1].name "Option"`},
		{"input name empty", func(s *abi.Schema) { s.Input[0].Name = "" }, `input[0].name ""`},
		{"input name too long", func(s *abi.Schema) { s.Input[0].Name = strings.Repeat("a", 64) }, "input[0].name"},
		{"input name digit first", func(s *abi.Schema) { s.Input[0].Name = "1a" }, `input[0].name "1a"`},
		{"input type", func(s *abi.Schema) { s.Input[1].Type = "bool" }, `input[1].type "bool"`},
		{"input path", func(s *abi.Schema) { s.Input[0].Path = strings.Repeat("p", 257) }, "input[0].path: longer than 256 bytes"},
		{"input twice", func(s *abi.Schema) { s.Input[1].Name = "poll_id" }, `input[1].name "poll_id": declared twice`},
		{"key name", func(s *abi.Schema) { s.Keys[1].Name = "op-tion" }, `keys[1]: name "op-tion"`},
		{"key reserved", func(s *abi.Schema) { s.Keys[0].Name = "window_start" }, `keys[0]: name "window_start": reserved`},
		{"key twice", func(s *abi.Schema) { s.Keys[1].Name = "poll_id" }, `keys[1]: name "poll_id": declared twice`},
		{"key type", func(s *abi.Schema) { s.Keys[0].Type = "" }, `keys[0]: type ""`},
		{"metric name", func(s *abi.Schema) { s.Metrics[0].Name = "Votes" }, `metrics[0]: name "Votes"`},
		{"metric reserved", func(s *abi.Schema) { s.Metrics[0].Name = "final" }, `metrics[0]: name "final": reserved`},
		{"metric named as a table column", func(s *abi.Schema) { s.Metrics[0].Name = "is_final" }, `metrics[0]: name "is_final": reserved`},
		{"key named as a table column", func(s *abi.Schema) { s.Keys[0].Name = "source_partition" }, `keys[0]: name "source_partition": reserved`},
		{"metric same as key", func(s *abi.Schema) { s.Metrics[0].Name = "option" }, `metrics[0]: name "option": declared twice`},
		{"metric type", func(s *abi.Schema) { s.Metrics[0].Type = "int32" }, `metrics[0]: type "int32"`},
		{"count float", func(s *abi.Schema) { s.Metrics[0].Type = abi.Float64 }, "metrics[0].type: a count is int64"},
		{"distinct float", func(s *abi.Schema) { s.Metrics[0].Kind, s.Metrics[0].Type = abi.Distinct, abi.Float64 }, "metrics[0].type: a distinct count is int64"},
		{"metric kind", func(s *abi.Schema) { s.Metrics[0].Kind = "avg" }, `metrics[0].kind "avg": want count, sum, min, max or distinct`},
		{"metric string", func(s *abi.Schema) { s.Metrics[0].Kind, s.Metrics[0].Type = abi.Max, abi.String }, "metrics[0].type: want int64 or float64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := votesSchema()
			c.mutate(&s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestSchema_JSONRoundTrip(t *testing.T) {
	s := votesSchema()
	s.Input[0].Path = "poll"
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back abi.Schema
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Input[0].JSONPath() != "poll" || back.Input[1].JSONPath() != "option" {
		t.Fatalf("JSONPath: %q, %q", back.Input[0].JSONPath(), back.Input[1].JSONPath())
	}
	if err := back.Validate(); err != nil {
		t.Fatal(err)
	}
}

func ExampleSchema_Validate() {
	s := votesSchema()
	s.Metrics[0].Name = "window"
	fmt.Println(s.Validate())
	// Output: metrics[0]: name "window": reserved for the host's own column
}

func TestSchema_StateVersions(t *testing.T) {
	s := votesSchema()
	if s.StateVersion() != 1 || !s.AcceptsState(1) || s.AcceptsState(2) {
		t.Fatalf("undeclared: version %d, accepts 1 %v, 2 %v; want version 1 accepting only itself", s.StateVersion(), s.AcceptsState(1), s.AcceptsState(2))
	}
	s.State = &abi.State{Version: 3, Accepts: []int{1}}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	for v, want := range map[int]bool{1: true, 2: false, 3: true, 4: false} {
		if s.AcceptsState(v) != want {
			t.Errorf("version 3 accepting [1]: AcceptsState(%d) = %v", v, !want)
		}
	}
	s.State.Migrates = []int{2}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	for v, want := range map[int][3]bool{1: {true, false, true}, 2: {false, true, true}, 3: {true, false, true}, 4: {}} {
		if got := [3]bool{s.AcceptsState(v), s.MigratesState(v), s.RestoresState(v)}; got != want {
			t.Errorf("version 3 accepting [1], migrating [2]: state %d accepted, migrated, restored %v, want %v", v, got, want)
		}
	}
}
