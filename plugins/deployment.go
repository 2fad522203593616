package plugins

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wagg/wagg/abi"
)

// Deployment runs a plugin on a topic. It is written as YAML or JSON:
//
//	name: votes
//	plugin: votes@1
//	topic: votes
//	windows:
//	  - {name: second, kind: tumbling, size: 1s}
//	  - {name: total, kind: global}
//	lateness: 5s
type Deployment struct {
	Name            string         `json:"name" yaml:"name"`
	Plugin          string         `json:"plugin" yaml:"plugin"` // name@version
	Topic           string         `json:"topic" yaml:"topic"`
	DeadLetterTopic string         `json:"dead_letter_topic,omitempty" yaml:"dead_letter_topic"`
	Windows         []WindowSpec   `json:"windows" yaml:"windows"`
	Lateness        Duration       `json:"lateness,omitempty" yaml:"lateness"`
	IdleAfter       Duration       `json:"idle_after,omitempty" yaml:"idle_after"`
	EmitEvery       Duration       `json:"emit_every,omitempty" yaml:"emit_every"`
	CheckpointEvery Duration       `json:"checkpoint_every,omitempty" yaml:"checkpoint_every"`
	MaxBatch        int            `json:"max_batch,omitempty" yaml:"max_batch"`
	MaxFuture       Duration       `json:"max_future,omitempty" yaml:"max_future"`
	MaxPluginErrors int            `json:"max_plugin_errors,omitempty" yaml:"max_plugin_errors"`
	Params          map[string]any `json:"params,omitempty" yaml:"params"`
	// Generation names a fresh start of the deployment (wagg deploy
	// -start): each has tables, checkpoints and a consumer group of its
	// own (Storage). It is the catalog offset of the fresh start's record,
	// so a later one is larger; 0 is the first. The host keeps it in the
	// stored spec and ignores what a deploy sends.
	Generation int `json:"generation,omitempty" yaml:"generation"`
	// Start asks for a fresh start into a new generation (wagg deploy
	// -start, POST /v1/deployments?start=): "earliest", an offset, or an
	// RFC 3339 time. Not stored.
	Start string `json:"-" yaml:"-"`
}

// StartAt is where a fresh start begins: Offset in every partition, or the
// first record at or after Time.
type StartAt struct {
	Offset int64
	Time   time.Time
}

// ParseStart reads a -start value: earliest, an offset (a whole number) or
// an RFC 3339 time.
func ParseStart(s string) (StartAt, error) {
	if s == "earliest" {
		return StartAt{}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return StartAt{Offset: n}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return StartAt{Time: t}, nil
	}
	return StartAt{}, fmt.Errorf("%w: start %q: want earliest, an offset (0, 1500) or an RFC 3339 time (2026-12-02T10:00:00Z)", ErrInvalid, s)
}

// Storage names what the deployment's current generation keeps: its raw
// table, checkpoints and consumer group. The first generation uses the
// deployment's name; later ones add __g<n>, which no deployment name can
// hold.
func (d *Deployment) Storage() string { return GenerationName(d.Name, d.Generation) }

// GenerationName is Storage for generation g of deployment name.
func GenerationName(name string, g int) string {
	if g == 0 {
		return name
	}
	return fmt.Sprintf("%s__g%d", name, g)
}

// WindowSpec is one window of a deployment.
type WindowSpec struct {
	Name  string         `json:"name" yaml:"name"`
	Kind  abi.WindowKind `json:"kind" yaml:"kind"`
	Size  Duration       `json:"size,omitempty" yaml:"size"`
	Slide Duration       `json:"slide,omitempty" yaml:"slide"`
}

// Defaults of a deployment's optional settings.
const (
	DefaultLateness        = 5 * time.Second
	DefaultIdleAfter       = 10 * time.Second
	DefaultEmitEvery       = 100 * time.Millisecond
	DefaultCheckpointEvery = 2 * time.Second
	DefaultMaxBatch        = 4096
	DefaultMaxFuture       = time.Minute
	DefaultMaxPluginErrors = 100
)

// ParseDeployment reads a YAML or JSON deployment, refusing unknown fields,
// applies the defaults and validates it.
func ParseDeployment(b []byte) (Deployment, error) {
	var d Deployment
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf("%w: deployment: %v", ErrInvalid, err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil && len(more.Content) > 0 && more.Content[0].Tag != "!!null" || err != nil && !errors.Is(err, io.EOF) {
		return d, fmt.Errorf("%w: deployment: more than one YAML document: a file holds one deployment", ErrInvalid)
	}
	d.applyDefaults()
	return d, d.Validate()
}

func (d *Deployment) applyDefaults() {
	if d.DeadLetterTopic == "" && d.Topic != "" {
		d.DeadLetterTopic = d.Topic + ".dead-letters"
	}
	if d.Lateness == 0 {
		d.Lateness = Duration(DefaultLateness)
	}
	if d.IdleAfter == 0 {
		d.IdleAfter = Duration(DefaultIdleAfter)
	}
	if d.EmitEvery == 0 {
		d.EmitEvery = Duration(DefaultEmitEvery)
	}
	if d.CheckpointEvery == 0 {
		d.CheckpointEvery = Duration(DefaultCheckpointEvery)
	}
	if d.MaxBatch == 0 {
		d.MaxBatch = DefaultMaxBatch
	}
	if d.MaxFuture == 0 {
		d.MaxFuture = Duration(DefaultMaxFuture)
	}
	if d.MaxPluginErrors == 0 {
		d.MaxPluginErrors = DefaultMaxPluginErrors
	}
}

var topicRE = func(s string) bool {
	if len(s) == 0 || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if !(c == '.' || c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// ReservedTopic reports whether a deployment may neither read nor write
// topic: the hosts' own topics (the catalog, the live relays) start with
// _wagg_, and Kafka's internal ones with __. A dead letter carries its
// record's key, value and headers, so a deployment dead-lettering into the
// catalog would let whoever writes its input rewrite the cluster's plugins
// and deployments.
func ReservedTopic(topic string) bool {
	return strings.HasPrefix(topic, "_wagg_") || strings.HasPrefix(topic, "__")
}

const reservedWhy = "topics starting with _wagg_ or __ are the hosts' and Kafka's own; want another topic"

// Validate names the first wrong field.
func (d *Deployment) Validate() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: deployment field %s: %s", ErrInvalid, field, fmt.Sprintf(format, a...))
	}
	switch {
	case !nameRE.MatchString(d.Name) || strings.Contains(d.Name, "__"):
		return bad("name", "%q: want a lower-case letter, then letters, digits or single _ (at most 48)", d.Name)
	case !strings.Contains(d.Plugin, "@"):
		return bad("plugin", "%q: want name@version of a pushed plugin", d.Plugin)
	case !topicRE(d.Topic):
		return bad("topic", "%q: not a valid Kafka topic name", d.Topic)
	case ReservedTopic(d.Topic):
		return bad("topic", "%q: %s", d.Topic, reservedWhy)
	case !topicRE(d.DeadLetterTopic):
		return bad("dead_letter_topic", "%q: not a valid Kafka topic name", d.DeadLetterTopic)
	case ReservedTopic(d.DeadLetterTopic):
		return bad("dead_letter_topic", "%q: %s", d.DeadLetterTopic, reservedWhy)
	case d.DeadLetterTopic == d.Topic:
		return bad("dead_letter_topic", "%q is the input topic of deployment %s: its dead letters would be read again (a dead-letter loop); want another topic", d.DeadLetterTopic, d.Name)
	case len(d.Windows) == 0 || len(d.Windows) > 16:
		return bad("windows", "%d windows, want 1 to 16", len(d.Windows))
	case d.Lateness < 0 || time.Duration(d.Lateness) > 24*time.Hour:
		return bad("lateness", "%s: want 0 to 24h", d.Lateness)
	case d.IdleAfter < 0:
		return bad("idle_after", "%s: want >= 0 (0 never advances an idle partition)", d.IdleAfter)
	case time.Duration(d.EmitEvery) < 10*time.Millisecond || time.Duration(d.EmitEvery) > time.Minute:
		return bad("emit_every", "%s: want 10ms to 1m", d.EmitEvery)
	case time.Duration(d.CheckpointEvery) < 100*time.Millisecond || time.Duration(d.CheckpointEvery) > 10*time.Minute:
		return bad("checkpoint_every", "%s: want 100ms to 10m", d.CheckpointEvery)
	case d.MaxBatch < 1 || d.MaxBatch > abi.MaxBatchRecords:
		return bad("max_batch", "%d: want 1 to %d", d.MaxBatch, abi.MaxBatchRecords)
	case time.Duration(d.MaxFuture) < time.Second || time.Duration(d.MaxFuture) > 366*24*time.Hour:
		return bad("max_future", "%s: want 1s to 8784h", d.MaxFuture)
	case d.Generation < 0:
		return bad("generation", "%d: want >= 0 (the host sets it)", d.Generation)
	case d.MaxPluginErrors < 1 || d.MaxPluginErrors > 1_000_000_000:
		return bad("max_plugin_errors", "%d: want 1 to 1000000000", d.MaxPluginErrors)
	}
	seen := map[string]bool{}
	for i, w := range d.Windows {
		aw := w.ABI()
		if err := aw.Validate(); err != nil {
			return bad(fmt.Sprintf("windows[%d]", i), "%v", err)
		}
		if seen[w.Name] {
			return bad(fmt.Sprintf("windows[%d].name", i), "%q used twice", w.Name)
		}
		seen[w.Name] = true
	}
	if _, err := json.Marshal(d.Params); err != nil {
		return bad("params", "%v", err)
	}
	return nil
}

// LoopError refuses a deployment that would close a dead-letter loop: a
// record one deployment dead-letters would be read by another (or itself),
// fail there too, come back and bounce for ever. It matches ErrConflict
// (409): the spec is fine alone, not next to the deployment it names.
type LoopError struct {
	Deployment string // the one being deployed
	Other      string // the stored deployment it would loop with
	Topic      string // the topic both name
	// Input: Topic is Deployment's input and Other's dead-letter topic;
	// else Deployment's dead-letter topic and Other's input.
	Input bool
}

func (e *LoopError) Error() string {
	if e.Input {
		return fmt.Sprintf("dead-letter loop: deployment %s would read topic %q, which is the dead_letter_topic of deployment %s; "+
			"records %s dead-letters would be fed back into a plugin, fail again and bounce for ever. Read dead letters with a Kafka consumer, or give %s another dead_letter_topic",
			e.Deployment, e.Topic, e.Other, e.Other, e.Other)
	}
	return fmt.Sprintf("dead-letter loop: deployment %s would dead-letter into topic %q, which is the input topic of deployment %s; "+
		"a record that fails in both would bounce between them for ever. Give %s another dead_letter_topic",
		e.Deployment, e.Topic, e.Other, e.Deployment)
}

// Is makes a LoopError match ErrConflict.
func (e *LoopError) Is(target error) bool { return target == ErrConflict }

// UpgradeError refuses a plugin for a deployment whose checkpoints hold
// state it neither accepts nor migrates: restoring it would count on from
// groups that mean something else, and starting empty would lose the
// totals. It matches ErrConflict (409) and says what can be done instead.
type UpgradeError struct {
	Deployment string
	Plugin     string // name@version being deployed
	Version    int    // its state version
	Accepts    []int  // the older versions it accepts
	Migrates   []int  // the older versions it migrates
	Old        string // who wrote the checkpoints: name@version, or a sha256 no longer in the registry
	OldVersion int    // their state version
	Partitions int    // how many partitions' checkpoints; 0: Old runs, and checkpoints as it stops
	// Unknown: the plugin migrates OldVersion, but the one that wrote the
	// checkpoints is not in the registry, and a migration reads old state
	// through the schema of its writer.
	Unknown bool
}

func (e *UpgradeError) Error() string {
	versions := func(vs []int) string {
		if len(vs) == 0 {
			return "no older version"
		}
		return fmt.Sprintf("versions %v", vs)
	}
	fresh := "or start fresh: wagg deploy -start earliest (or an offset, or a time) counts into a new generation of the tables beside the running one and takes over once caught up"
	if e.Unknown {
		return fmt.Sprintf("deployment %s: the checkpoints of %d partitions hold state version %d written by %s, which is not in the registry; %s migrates state version %d but reads it through the schema of the plugin that wrote it. "+
			"Push that plugin again; or keep the old plugin; %s",
			e.Deployment, e.Partitions, e.OldVersion, e.Old, e.Plugin, e.OldVersion, fresh)
	}
	held := fmt.Sprintf("the checkpoints of %d partitions hold state version %d written by %s", e.Partitions, e.OldVersion, e.Old)
	if e.Partitions == 0 {
		held = fmt.Sprintf("%s runs, and checkpoints state version %d as it stops", e.Old, e.OldVersion)
	}
	return fmt.Sprintf("deployment %s: %s; %s declares state version %d, accepts %s and migrates %s, so it cannot restore them. "+
		"Keep the old plugin (plugin: %s); or, if the new one counts on from that state as it is, declare that it accepts state version %d (Go SDK: Spec.State.Accepts) and push it again; "+
		"or, if it can convert that state, declare that it migrates state version %d (Go SDK: Spec.State.Migrates and Spec.Migrate) and push it again; %s",
		e.Deployment, held, e.Plugin, e.Version, versions(e.Accepts), versions(e.Migrates), e.Old, e.OldVersion, e.OldVersion, fresh)
}

// Is makes an UpgradeError match ErrConflict.
func (e *UpgradeError) Is(target error) bool { return target == ErrConflict }

// CheckDeadLetterLoop refuses d when its dead-letter topic is the input of
// any deployment in others, or its input is the dead-letter topic of any of
// them. others are the stored deployments; one named like d is the one d
// replaces and is skipped (d against itself is Validate's check).
func CheckDeadLetterLoop(d Deployment, others []Deployment) error {
	for _, o := range others {
		switch {
		case o.Name == d.Name:
		case d.DeadLetterTopic == o.Topic:
			return &LoopError{Deployment: d.Name, Other: o.Name, Topic: o.Topic}
		case d.Topic == o.DeadLetterTopic:
			return &LoopError{Deployment: d.Name, Other: o.Name, Topic: d.Topic, Input: true}
		}
	}
	return nil
}

// ABI converts the window for the pipeline and the guest.
func (w WindowSpec) ABI() abi.Window {
	return abi.Window{Name: w.Name, Kind: w.Kind, SizeMs: time.Duration(w.Size).Milliseconds(), SlideMs: time.Duration(w.Slide).Milliseconds()}
}

// ABIWindows converts every window of the deployment (WindowSpec.ABI).
func (d *Deployment) ABIWindows() []abi.Window {
	out := make([]abi.Window, len(d.Windows))
	for i, w := range d.Windows {
		out[i] = w.ABI()
	}
	return out
}

// PluginRef splits Plugin into name and version.
func (d *Deployment) PluginRef() (name, version string) {
	name, version, _ = strings.Cut(d.Plugin, "@")
	return name, version
}

// Duration is a time.Duration written as "1s", "250ms" in YAML and JSON.
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads "1s" (or 0).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration like \"5s\" or \"250ms\"")
	}
	return d.parse(s)
}

// UnmarshalYAML reads 1s.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration like 5s or 250ms", n.Line)
	}
	if err := d.parse(n.Value); err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	return nil
}

func (d *Duration) parse(s string) error {
	if s == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration like 5s or 250ms", s)
	}
	*d = Duration(v)
	return nil
}

// Failure is why a deployment stopped by itself. A failed deployment is not
// started again (on any host, nor after a restart); deploying it again
// clears it.
type Failure struct {
	Error string    `json:"error"`
	At    time.Time `json:"at"`
}
