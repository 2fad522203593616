package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/internal/testwasm"
)

func TestDeploy_RefusesDeadLetterLoops(t *testing.T) {
	e := services(t)
	in, cl := newTopic(t, e, 1)
	h := startHost(t, e)
	deploy := votesDeployer(t, h)
	if code, eb := deploy("first", in, in+".dead-letters"); code != http.StatusCreated {
		t.Fatalf("deploy first: %d %+v", code, eb)
	}
	// A second deployment reading the first one's dead letters (the topic
	// exists now: the first deploy created it) would feed them back into a
	// plugin; one dead-lettering into the first one's input would bounce.
	retry := in + ".retry"
	adm := kadm.NewClient(cl)
	t.Cleanup(func() { adm.DeleteTopics(context.Background(), retry) })
	if _, err := adm.CreateTopic(context.Background(), 1, 1, nil, retry); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, topic, dl, shared string }{
		{"reads_dead_letters", in + ".dead-letters", retry + ".dl", in + ".dead-letters"},
		{"dead_letters_into_input", retry, in, in},
		{"first", in, in, in}, // itself
	}
	for _, c := range cases {
		code, eb := deploy(c.name, c.topic, c.dl)
		if code/100 != 4 || !strings.Contains(eb.Error.Message, "deployment "+c.name) || !strings.Contains(eb.Error.Message, `"`+c.shared+`"`) ||
			!strings.Contains(eb.Error.Message, "dead-letter loop") {
			t.Errorf("deploy %s (topic %s, dead letters %s): %d %+v, want 4xx naming it, the topic and the loop", c.name, c.topic, c.dl, code, eb)
		}
		if c.name != "first" && (code != http.StatusConflict || eb.Error.Code != api.CodeConflict ||
			!strings.Contains(eb.Error.Message, "deployment first") || !strings.Contains(eb.Error.Message, "dead-letter loop")) {
			t.Errorf("deploy %s: %d %+v, want 409 conflict naming deployment first and the loop", c.name, code, eb)
		}
	}
	// Nothing of the refused deploys was made or stored.
	topics, err := adm.ListTopics(context.Background(), retry+".dl")
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has(retry + ".dl") {
		t.Errorf("a refused deploy created its dead-letter topic %s", retry+".dl")
	}
	if ds := listDeployments(t, h); len(ds) != 1 || ds[0].Name != "first" || ds[0].DeadLetterTopic != in+".dead-letters" {
		t.Fatalf("deployments after the refusals: %+v, want first alone as deployed", ds)
	}
	// Another dead-letter topic makes it fine.
	if code, eb := deploy("second", retry, retry+".dead-letters"); code != http.StatusCreated {
		t.Fatalf("deploy second: %d %+v", code, eb)
	}
	t.Cleanup(func() { adm.DeleteTopics(context.Background(), retry+".dead-letters") })
}

// A dead letter carries its record's key, value and headers, so a
// deployment dead-lettering into the cluster's catalog would let whoever
// writes its input undeploy, replace or delete everything (a null value on
// the key deployment/<name> is an undeploy). No deployment reads or writes
// the hosts' own topics or Kafka's, whatever kafka.catalog_topic names.
func TestDeploy_RefusesTheHostsOwnTopics(t *testing.T) {
	e := services(t)
	in, cl := newTopic(t, e, 1)
	cfg := hostConfig(t, e)
	cfg.Kafka.CatalogTopic = "catalog-" + cfg.ClickHouse.Database
	adm := kadm.NewClient(cl)
	t.Cleanup(func() { adm.DeleteTopics(context.Background(), cfg.Kafka.CatalogTopic) })
	h := runHost(t, e, cfg)
	deploy := votesDeployer(t, h)
	if code, eb := deploy("votes", in, in+".dead-letters"); code != http.StatusCreated {
		t.Fatalf("deploy votes: %d %+v", code, eb)
	}
	cases := []struct{ name, topic, dl, field, named string }{
		{"into_catalog", in, cfg.Kafka.CatalogTopic, "", cfg.Kafka.CatalogTopic},
		{"reads_catalog", cfg.Kafka.CatalogTopic, in + ".dl", "", cfg.Kafka.CatalogTopic},
		{"into_default_catalog", in, "_wagg_catalog_" + cfg.ClickHouse.Database, "field dead_letter_topic", "_wagg_catalog_"},
		{"into_relay", in, "_wagg_live_" + cfg.ClickHouse.Database + "_votes", "field dead_letter_topic", "_wagg_live_"},
		{"into_offsets", in, "__consumer_offsets", "field dead_letter_topic", "__consumer_offsets"},
		{"reads_relay", "_wagg_live_" + cfg.ClickHouse.Database + "_votes", in + ".dl", "field topic", "_wagg_live_"},
		{"votes", in, "__transaction_state", "field dead_letter_topic", "__transaction_state"}, // a redeploy too
	}
	for _, c := range cases {
		code, eb := deploy(c.name, c.topic, c.dl)
		if code != http.StatusBadRequest || eb.Error.Code != api.CodeInvalidSpec || !strings.Contains(eb.Error.Message, c.named) ||
			!strings.Contains(eb.Error.Message, c.field) {
			t.Errorf("deploy %s (topic %s, dead letters %s): %d %+v, want 400 invalid naming %q and %q", c.name, c.topic, c.dl, code, eb, c.named, c.field)
		}
	}
	// The votes deployment is as it was deployed, and alone.
	if ds := listDeployments(t, h); len(ds) != 1 || ds[0].Name != "votes" || ds[0].DeadLetterTopic != in+".dead-letters" {
		t.Fatalf("deployments after the refusals: %+v, want votes alone as deployed", ds)
	}
	t.Cleanup(func() { adm.DeleteTopics(context.Background(), in+".dead-letters") })
}

// votesDeployer pushes the votes plugin to h and returns a deploy of it
// by name, input and dead-letter topic, answering the status and error.
func votesDeployer(t *testing.T, h *host) func(name, topic, dl string) (int, api.ErrorBody) {
	t.Helper()
	if code, body := h.post(t, "/v1/plugins/votes/1", "application/wasm", testwasm.Build(t, "examples/votes")); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	return func(name, topic, dl string) (int, api.ErrorBody) {
		spec := fmt.Sprintf(`{"name":%q,"plugin":"votes@1","topic":%q,"dead_letter_topic":%q,"windows":[{"name":"total","kind":"global"}]}`, name, topic, dl)
		code, body := h.post(t, "/v1/deployments", "application/json", []byte(spec))
		var eb api.ErrorBody
		json.Unmarshal(body, &eb)
		return code, eb
	}
}

// listDeployments lists h's deployments.
func listDeployments(t *testing.T, h *host) []api.Deployment {
	t.Helper()
	resp, err := http.Get(h.url + "/v1/deployments")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ds []api.Deployment
	if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil {
		t.Fatal(err)
	}
	return ds
}
