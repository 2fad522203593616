package plugins

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const goodSpec = `
name: votes
plugin: votes@1
topic: votes
windows:
  - {name: second, kind: tumbling, size: 1s}
  - {name: total, kind: global}
`

func TestParseDeployment_AppliesTheDefaults(t *testing.T) {
	d, err := ParseDeployment([]byte(goodSpec))
	if err != nil {
		t.Fatal(err)
	}
	if d.DeadLetterTopic != "votes.dead-letters" || time.Duration(d.Lateness) != DefaultLateness ||
		time.Duration(d.MaxFuture) != DefaultMaxFuture || d.MaxPluginErrors != DefaultMaxPluginErrors || d.MaxBatch != DefaultMaxBatch {
		t.Fatalf("defaults not applied: %+v", d)
	}
}

func TestParseDeployment_NamesTheWrongField(t *testing.T) {
	cases := []struct{ extra, field string }{
		{"lateness: 48h", "lateness"},
		{"max_future: 10ms", "max_future"},
		{"max_future: -1s", "max_future"},
		{"max_plugin_errors: -3", "max_plugin_errors"},
		{"max_batch: 100000000", "max_batch"},
		{"checkpoint_every: 1ms", "checkpoint_every"},
		{"dead_letter_topic: votes", "dead_letter_topic"},
		{"dead_letter_topic: _wagg_catalog_wagg", "dead_letter_topic"},
		{"dead_letter_topic: __consumer_offsets", "dead_letter_topic"},
		{"idle_after: soon", "soon"},
		{"maxfuture: 1m", "maxfuture"},
		{"---\nname: second", "more than one YAML document"},
		{"--- [", "more than one YAML document"},
	}
	for _, c := range cases {
		t.Run(c.extra, func(t *testing.T) {
			_, err := ParseDeployment([]byte(goodSpec + c.extra + "\n"))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("got %v, want ErrInvalid naming %s", err, c.field)
			}
		})
	}
}

// An empty document after the deployment is no second deployment.
func TestParseDeployment_AnEmptyDocumentAfterIt(t *testing.T) {
	for _, tail := range []string{"---\n", "---\n# nothing\n", "...\n"} {
		if _, err := ParseDeployment([]byte(goodSpec + tail)); err != nil {
			t.Errorf("%q: %v", tail, err)
		}
	}
}

func TestCheckDeadLetterLoop_RefusesATopicThatIsBothInputAndDeadLetters(t *testing.T) {
	spec := func(name, topic, dl string) Deployment {
		return Deployment{Name: name, Topic: topic, DeadLetterTopic: dl}
	}
	stored := []Deployment{spec("a", "in-a", "dl-a"), spec("b", "in-b", "dl-b")}
	cases := []struct {
		name  string
		d     Deployment
		other string
		topic string
	}{
		{"dead letters into another's input", spec("c", "in-c", "in-a"), "a", "in-a"},
		{"input is another's dead letters", spec("c", "dl-b", "dl-c"), "b", "dl-b"},
		{"a replaced deployment into another's input", spec("b", "in-b", "in-a"), "a", "in-a"},
		{"each other's inputs", spec("c", "dl-a", "in-a"), "a", "in-a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckDeadLetterLoop(c.d, stored)
			var le *LoopError
			if !errors.As(err, &le) || !errors.Is(err, ErrConflict) {
				t.Fatalf("got %v, want a LoopError matching ErrConflict", err)
			}
			msg := err.Error()
			for _, want := range []string{"deployment " + c.d.Name, "deployment " + c.other, `"` + c.topic + `"`, "dead_letter_topic"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not name %s", msg, want)
				}
			}
		})
	}
	for _, d := range []Deployment{
		spec("c", "in-c", "dl-c"),
		spec("c", "in-a", "dl-c"),   // a second reader of a's input
		spec("c", "in-c", "dl-a"),   // dead letters shared with a
		spec("a", "in-a2", "dl-a2"), // a itself, replaced
	} {
		if err := CheckDeadLetterLoop(d, stored); err != nil {
			t.Errorf("%+v: %v, want no loop", d, err)
		}
	}
}

// A refused upgrade says why and what can be done: migrating is one way
// on, and a plugin that migrates the old version but cannot read it (the
// plugin that wrote it is gone from the registry) is told to push that
// plugin again.
func TestUpgradeError_NamesTheWaysOn(t *testing.T) {
	for _, c := range []struct {
		name string
		e    UpgradeError
		want []string
	}{
		{"neither accepted nor migrated", UpgradeError{Deployment: "polls", Plugin: "counts@3", Version: 3, Accepts: []int{1}, Migrates: []int{2}, Old: "counts@9", OldVersion: 9, Partitions: 2},
			[]string{"state version 9 written by counts@9", "counts@3 declares state version 3, accepts versions [1] and migrates versions [2]", "accepts state version 9", "migrates state version 9 (Go SDK: Spec.State.Migrates and Spec.Migrate)", "-start earliest"}},
		{"writer unknown", UpgradeError{Deployment: "polls", Plugin: "counts@2", Version: 2, Migrates: []int{1}, Old: "the plugin with sha256 ab12", OldVersion: 1, Partitions: 2, Unknown: true},
			[]string{"written by the plugin with sha256 ab12, which is not in the registry", "counts@2 migrates state version 1 but reads it through the schema of the plugin that wrote it", "Push that plugin again", "-start earliest"}},
	} {
		msg := c.e.Error()
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: %q does not say %q", c.name, msg, w)
			}
		}
		if !errors.Is(&c.e, ErrConflict) {
			t.Errorf("%s: not a conflict", c.name)
		}
	}
}

func TestParseStart_TakesEarliestAnOffsetOrATime(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want StartAt
		bad  bool
	}{
		{"earliest", StartAt{}, false},
		{"0", StartAt{}, false},
		{"1500", StartAt{Offset: 1500}, false},
		{"2026-12-02T10:00:00Z", StartAt{Time: at}, false},
		{"2026-12-02T11:00:00+01:00", StartAt{Time: at}, false},
		{"-1", StartAt{}, true},
		{"latest", StartAt{}, true},
		{"", StartAt{}, true},
		{"2026-12-02", StartAt{}, true},
		{"99999999999999999999", StartAt{}, true},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseStart(c.in)
			if c.bad {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "earliest") {
					t.Fatalf("got %+v %v, want ErrInvalid saying what is accepted", got, err)
				}
				return
			}
			if err != nil || got.Offset != c.want.Offset || !got.Time.Equal(c.want.Time) {
				t.Fatalf("got %+v %v, want %+v", got, err, c.want)
			}
		})
	}
}

func TestParseDeployment_ReadsJSONAndYAMLAlike(t *testing.T) {
	j := `{"name":"votes","plugin":"votes@1","topic":"votes","lateness":"250ms","max_batch":512,
		"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"hop","kind":"hopping","size":"10s","slide":"5s"},{"name":"total","kind":"global"}]}`
	y := goodSpec + "lateness: 250ms\nmax_batch: 512\n"
	y = strings.Replace(y, "  - {name: total", "  - {name: hop, kind: hopping, size: 10s, slide: 5s}\n  - {name: total", 1)
	dj, err := ParseDeployment([]byte(j))
	if err != nil {
		t.Fatal(err)
	}
	dy, err := ParseDeployment([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(dj.Lateness) != 250*time.Millisecond || dj.MaxBatch != 512 || len(dj.Windows) != 3 {
		t.Fatalf("JSON spec read as %+v", dj)
	}
	wj, wy := dj.ABIWindows(), dy.ABIWindows()
	if len(wj) != len(wy) {
		t.Fatalf("windows %+v and %+v", wj, wy)
	}
	for i := range wj {
		if wj[i] != wy[i] {
			t.Errorf("window %d: JSON %+v, YAML %+v", i, wj[i], wy[i])
		}
	}
	if wj[1].SizeMs != 10_000 || wj[1].SlideMs != 5000 {
		t.Errorf("hopping window %+v", wj[1])
	}
	if name, version := dj.PluginRef(); name != "votes" || version != "1" {
		t.Errorf("plugin ref %q %q", name, version)
	}
}

func TestParseDeployment_RefusesWindowsItCannotRun(t *testing.T) {
	cases := []struct{ windows, field string }{
		{"windows: []", "windows"},
		{"windows:\n  - {name: a, kind: tumbling, size: 1s}\n  - {name: a, kind: global}", "windows[1].name"},
		{"windows:\n  - {name: a, kind: sliding, size: 1s}", "windows[0]"},
		{"windows:\n  - {name: a, kind: tumbling}", "windows[0]"},
		{"windows:\n  - {name: a, kind: hopping, size: 1s, slide: 2s}", "windows[0]"},
	}
	base := "name: votes\nplugin: votes@1\ntopic: votes\n"
	for _, c := range cases {
		t.Run(c.field, func(t *testing.T) {
			_, err := ParseDeployment([]byte(base + c.windows + "\n"))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("got %v, want ErrInvalid naming %s", err, c.field)
			}
		})
	}
}

func TestGenerationName_LaterGenerationsCannotCollideWithADeployment(t *testing.T) {
	if got := GenerationName("votes", 0); got != "votes" {
		t.Errorf("generation 0: %q, want the deployment's name", got)
	}
	g := GenerationName("votes", 3)
	if g != "votes__g3" {
		t.Errorf("generation 3: %q", g)
	}
	d := Deployment{Name: g, Plugin: "votes@1", Topic: "votes", DeadLetterTopic: "dl", Windows: []WindowSpec{{Name: "total", Kind: "global"}}}
	d.applyDefaults()
	if err := d.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a deployment named like a generation (%s) was accepted", g)
	}
}

func TestValidate_RefusesTheHostsAndKafkasTopics(t *testing.T) {
	for _, topic := range []string{"_wagg_catalog_wagg", "_wagg_live_wagg_votes", "__consumer_offsets"} {
		d, err := ParseDeployment([]byte(strings.Replace(goodSpec, "topic: votes", "topic: "+topic, 1)))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "field topic") || !strings.Contains(err.Error(), topic) {
			t.Errorf("topic %s: %+v %v, want ErrInvalid naming the field and the topic", topic, d.Topic, err)
		}
	}
	if _, err := ParseDeployment([]byte(strings.Replace(goodSpec, "topic: votes", "topic: wagg_votes", 1))); err != nil {
		t.Errorf("topic wagg_votes: %v", err)
	}
}
