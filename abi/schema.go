package abi

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
)

// Type is the type of an input field, a group key column or a metric.
type Type string

const (
	Int64   Type = "int64"
	Float64 Type = "float64"
	String  Type = "string"
)

// Kind says how a metric combines values, and so how the host merges the
// per-partition values of one group into the value a dashboard shows.
type Kind string

const (
	Count Kind = "count" // int64, +1 per record (or +n); merged by sum
	Sum   Kind = "sum"   // int64 or float64; merged by sum
	Min   Kind = "min"   // int64 or float64; merged by min
	Max   Kind = "max"   // int64 or float64; merged by max
	// Distinct is int64, the number of distinct values, estimated from a
	// HyperLogLog sketch (Sketch) that the row carries and that merges by
	// register-wise max.
	Distinct Kind = "distinct"
)

// Field is one typed input field the host extracts from each record's JSON
// value before the batch reaches the guest. Path is the top-level JSON key;
// it defaults to Name. A record that lacks a required field, or holds a value
// of another type, is dead-lettered by the host with the reason.
type Field struct {
	Name     string `json:"name"`
	Type     Type   `json:"type"`
	Path     string `json:"path,omitempty"`
	Optional bool   `json:"optional,omitempty"` // missing means zero value
}

// Column is one group key column of the output.
type Column struct {
	Name string `json:"name"`
	Type Type   `json:"type"`
}

// Metric is one value column of the output.
type Metric struct {
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	Type Type   `json:"type"`
}

// Schema is what a plugin declares about itself through wagg_describe: what
// it reads and what it writes. The host derives the ClickHouse table, the
// JSON of live deltas and the decoding of records from it.
type Schema struct {
	ABI     int      `json:"abi"`
	Input   []Field  `json:"input"`
	Raw     bool     `json:"raw,omitempty"` // also hand the guest each record's raw value
	Keys    []Column `json:"keys"`
	Metrics []Metric `json:"metrics"`
	// State versions the plugin's snapshots; absent is version 1.
	State *State `json:"state,omitempty"`
}

// State is the version of what a plugin's snapshots mean, the older
// versions it restores as they are (Accepts) and those it converts into its
// own as it restores them (Migrates). The host records the version with each
// checkpoint; a new plugin takes over a deployment's checkpoints only when
// it wrote them or accepts or migrates their version (abi/ABI.md, "State
// versions").
type State struct {
	Version  int   `json:"version"`
	Accepts  []int `json:"accepts,omitempty"`
	Migrates []int `json:"migrates,omitempty"`
}

// MaxStateVersion bounds a declared state version.
const MaxStateVersion = 1 << 30

// StateVersion is the version of the plugin's snapshots (1 when undeclared).
func (s *Schema) StateVersion() int {
	if s.State == nil {
		return 1
	}
	return s.State.Version
}

// AcceptsState reports whether the plugin restores snapshots of version v
// as they are: its own version, or one it lists in Accepts.
func (s *Schema) AcceptsState(v int) bool {
	if v == s.StateVersion() {
		return true
	}
	return s.State != nil && slices.Contains(s.State.Accepts, v)
}

// MigratesState reports whether the plugin converts snapshots of version v
// into its own as it restores them. It needs the schema of the plugin that
// wrote them (Config.MigrateFrom).
func (s *Schema) MigratesState(v int) bool {
	return s.State != nil && slices.Contains(s.State.Migrates, v)
}

// RestoresState reports whether the plugin restores snapshots of version v,
// as they are or migrated.
func (s *Schema) RestoresState(v int) bool { return s.AcceptsState(v) || s.MigratesState(v) }

var nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// reserved are the output column names the host adds itself (those of
// the ClickHouse table and view, host/sink, and the live rows').
var reserved = map[string]bool{
	"window": true, "window_name": true, "window_start": true, "window_end": true,
	"partition": true, "source_partition": true, "final": true, "is_final": true,
	"version": true, "inserted_at": true,
}

// Limits on a declared schema, so a hostile plugin cannot make the host
// build absurd tables.
const (
	MaxFields  = 64
	MaxKeys    = 16
	MaxMetrics = 64
	// MaxKeyBytes bounds a row's encoded key (DecodeRows): a group's key
	// is held by the live view, the rows waiting for ClickHouse and its
	// inserts, several times over.
	MaxKeyBytes = 64 << 10
)

// Validate reports the first problem with a declared schema, naming the
// offending field.
func (s *Schema) Validate() error {
	if s.ABI != Version {
		return fmt.Errorf("abi: plugin speaks ABI %d, this host speaks %d", s.ABI, Version)
	}
	if len(s.Input) == 0 && !s.Raw {
		return errors.New("input: declare at least one field, or raw")
	}
	if len(s.Input) > MaxFields {
		return fmt.Errorf("input: %d fields, at most %d", len(s.Input), MaxFields)
	}
	if len(s.Keys) > MaxKeys {
		return fmt.Errorf("keys: %d columns, at most %d", len(s.Keys), MaxKeys)
	}
	if st := s.State; st != nil {
		if st.Version < 1 || st.Version > MaxStateVersion {
			return fmt.Errorf("state.version %d: want 1 to %d", st.Version, MaxStateVersion)
		}
		if n := len(st.Accepts) + len(st.Migrates); n > 64 {
			return fmt.Errorf("state: %d older versions accepted or migrated, at most 64", n)
		}
		for i, v := range st.Accepts {
			if v < 1 || v >= st.Version {
				return fmt.Errorf("state.accepts[%d] %d: want an older version, 1 to %d", i, v, st.Version-1)
			}
		}
		for i, v := range st.Migrates {
			if v < 1 || v >= st.Version {
				return fmt.Errorf("state.migrates[%d] %d: want an older version, 1 to %d", i, v, st.Version-1)
			}
			if slices.Contains(st.Accepts, v) {
				return fmt.Errorf("state.migrates[%d] %d: also in state.accepts; a version is restored as it is or migrated, not both", i, v)
			}
		}
	}
	if len(s.Metrics) == 0 || len(s.Metrics) > MaxMetrics {
		return fmt.Errorf("metrics: %d, want 1 to %d", len(s.Metrics), MaxMetrics)
	}
	seen := map[string]bool{}
	for i, f := range s.Input {
		if !nameRE.MatchString(f.Name) {
			return fmt.Errorf("input[%d].name %q: want lower-case letters, digits and _", i, f.Name)
		}
		if !f.Type.valid() {
			return fmt.Errorf("input[%d].type %q: want int64, float64 or string", i, f.Type)
		}
		if len(f.Path) > 256 {
			return fmt.Errorf("input[%d].path: longer than 256 bytes", i)
		}
		if seen[f.Name] {
			return fmt.Errorf("input[%d].name %q: declared twice", i, f.Name)
		}
		seen[f.Name] = true
	}
	out := map[string]bool{}
	for i, c := range s.Keys {
		if err := checkColumn(out, c.Name, c.Type); err != nil {
			return fmt.Errorf("keys[%d]: %w", i, err)
		}
	}
	for i, m := range s.Metrics {
		if err := checkColumn(out, m.Name, m.Type); err != nil {
			return fmt.Errorf("metrics[%d]: %w", i, err)
		}
		switch {
		case m.Kind == Count && m.Type != Int64:
			return fmt.Errorf("metrics[%d].type: a count is int64", i)
		case m.Kind == Distinct && m.Type != Int64:
			return fmt.Errorf("metrics[%d].type: a distinct count is int64", i)
		case m.Kind != Count && m.Kind != Sum && m.Kind != Min && m.Kind != Max && m.Kind != Distinct:
			return fmt.Errorf("metrics[%d].kind %q: want count, sum, min, max or distinct", i, m.Kind)
		case m.Type == String:
			return fmt.Errorf("metrics[%d].type: want int64 or float64", i)
		}
	}
	return nil
}

func checkColumn(seen map[string]bool, name string, t Type) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("name %q: want lower-case letters, digits and _", name)
	}
	if reserved[name] {
		return fmt.Errorf("name %q: reserved for the host's own column", name)
	}
	if seen[name] {
		return fmt.Errorf("name %q: declared twice", name)
	}
	seen[name] = true
	if !t.valid() {
		return fmt.Errorf("type %q: want int64, float64 or string", t)
	}
	return nil
}

func (t Type) valid() bool { return t == Int64 || t == Float64 || t == String }

// JSONPath returns the key a field is read from.
func (f Field) JSONPath() string {
	if f.Path != "" {
		return f.Path
	}
	return f.Name
}
