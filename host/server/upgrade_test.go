package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/internal/testwasm"
)

// pollsRig is a host with counts plugins pushed (version -> package) and a
// topic for one deployment "polls" of them, with its oracle.
type pollsRig struct {
	t        *testing.T
	h        *host
	topic    string
	cl       *kgo.Client
	produced int
}

func newPollsRig(t *testing.T, e env, plugins map[string]string) *pollsRig {
	r := &pollsRig{t: t, h: startHost(t, e)}
	r.topic, r.cl = newTopic(t, e, 2)
	for v, pkg := range plugins {
		if code, body := r.h.post(t, "/v1/plugins/counts/"+v, "application/wasm", testwasm.Build(t, pkg)); code != http.StatusCreated {
			t.Fatalf("push counts@%s: %d %s", v, code, body)
		}
	}
	return r
}

// deploy deploys polls with plugin; query is the request's query string.
func (r *pollsRig) deploy(plugin, query string) (int, []byte) {
	spec := fmt.Sprintf(`{"name":"polls","plugin":%q,"topic":%q,"checkpoint_every":"300ms","windows":[{"name":"total","kind":"global"}]}`, plugin, r.topic)
	return r.h.post(r.t, "/v1/deployments"+query, "application/json", []byte(spec))
}

func (r *pollsRig) produce(n int) { r.produceAt(n, time.Now()) }

// produceAt writes n votes stamped ts.
func (r *pollsRig) produceAt(n int, ts time.Time) {
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: fmt.Appendf(nil, `{"poll_id":%d}`, i%10+1), Timestamp: ts})
	}
	if err := r.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		r.t.Fatal(err)
	}
	r.produced += n
}

// total is the running total the view shows.
func (r *pollsRig) total() (int64, error) {
	var n int64
	err := r.h.ch.QueryRow(context.Background(), "SELECT toInt64(sum(votes)) FROM "+r.h.db+".polls WHERE window_name = 'total'").Scan(&n)
	return n, err
}

func (r *pollsRig) counted() error {
	n, err := r.total()
	if err == nil && n != int64(r.produced) {
		err = fmt.Errorf("%d votes in the view, want %d", n, r.produced)
	}
	return err
}

// A deployment's checkpoints name the plugin and the state version that
// wrote them: a new plugin of another state version is refused (and the
// old one keeps running) unless it accepts that version, in which case it
// takes the state over and the counts go on from it.
func TestUpgrade_RestoresOnlyStateTheNewPluginAccepts(t *testing.T) {
	r := newPollsRig(t, services(t), map[string]string{"1": "internal/testwasm/panics", "2": "internal/testwasm/statev2", "3": "internal/testwasm/statev2compat"})
	h, ctx, produce, counted := r.h, context.Background(), r.produce, r.counted
	deploy := func(plugin string) (int, api.ErrorBody) {
		code, body := r.deploy(plugin, "")
		var eb api.ErrorBody
		json.Unmarshal(body, &eb)
		return code, eb
	}
	writers := func(want int) func() error {
		return func() error {
			var n uint64
			if err := h.ch.QueryRow(ctx, "SELECT count() FROM "+h.db+"."+checkpoint.Table+" FINAL WHERE deployment = 'polls' AND state_version = ?", uint32(want)).Scan(&n); err != nil {
				return err
			}
			if n != 2 {
				return fmt.Errorf("%d partitions checkpointed with state version %d, want 2", n, want)
			}
			return nil
		}
	}
	if code, eb := deploy("counts@1"); code != http.StatusCreated {
		t.Fatalf("deploy counts@1: %d %+v", code, eb)
	}
	produce(1000)
	eventually(t, time.Minute, "counts@1 counted the votes", counted)
	eventually(t, time.Minute, "checkpoints of state version 1", writers(1))

	// State version 2, accepting nothing older: refused, naming what to do.
	code, eb := deploy("counts@2")
	if code != http.StatusConflict || eb.Error.Code != api.CodeConflict {
		t.Fatalf("deploy counts@2 onto state version 1: %d %+v, want 409 conflict", code, eb)
	}
	for _, want := range []string{"deployment polls", "state version 1 written by counts@1", "counts@2 declares state version 2", "Keep the old plugin (plugin: counts@1)", "accepts state version 1", "-start earliest"} {
		if !strings.Contains(eb.Error.Message, want) {
			t.Errorf("refusal %q does not say %q", eb.Error.Message, want)
		}
	}
	var ds []api.Deployment
	if err := getJSON(h.url+"/v1/deployments", &ds); err != nil || len(ds) != 1 || ds[0].Plugin != "counts@1" || ds[0].Status != api.StatusRunning {
		t.Fatalf("after the refusal: %+v %v, want counts@1 running", ds, err)
	}
	produce(500)
	eventually(t, time.Minute, "counts@1 still counting", counted)

	// Accepting version 1, it takes the state over: the totals go on.
	if code, eb := deploy("counts@3"); code != http.StatusCreated {
		t.Fatalf("deploy counts@3: %d %+v", code, eb)
	}
	produce(1000)
	eventually(t, time.Minute, "counts@3 counted on from the restored state", counted)
	eventually(t, time.Minute, "checkpoints of state version 2", writers(2))
	// Now the state is version 2, which counts@2 takes as its own.
	if code, eb := deploy("counts@2"); code != http.StatusCreated {
		t.Fatalf("deploy counts@2 onto state version 2: %d %+v", code, eb)
	}
	produce(500)
	eventually(t, time.Minute, "counts@2 counted on", counted)
}

// A deploy is checked against what the running plugin will checkpoint as it
// stops, not only against the checkpoints written so far: a plugin deployed
// a moment before has written none yet, and one that cannot read its state
// was accepted and then stopped the deployment on every host. And a
// deployment keeps its topic: its table and checkpoints are kept by source
// partition, and another topic's rows would mix with the old ones.
func TestUpgrade_RefusesWhatTheRunningPluginWillLeave(t *testing.T) {
	e := services(t)
	r := newPollsRig(t, e, map[string]string{"1": "internal/testwasm/panics", "3": "internal/testwasm/statev2compat"})
	if code, body := r.deploy("counts@1", ""); code != http.StatusCreated {
		t.Fatalf("deploy counts@1: %d %s", code, body)
	}
	r.produce(1000)
	eventually(t, time.Minute, "counts@1 counted the votes", r.counted)
	if code, body := r.deploy("counts@3", ""); code != http.StatusCreated {
		t.Fatalf("deploy counts@3: %d %s", code, body)
	}
	code, body := r.deploy("counts@1", "")
	if code != http.StatusConflict || !strings.Contains(string(body), "counts@3 runs, and checkpoints state version 2 as it stops") {
		t.Fatalf("deploy counts@1 right after counts@3: %d %s, want 409 naming the running plugin", code, body)
	}
	var ds []api.Deployment
	if err := getJSON(r.h.url+"/v1/deployments", &ds); err != nil || len(ds) != 1 || ds[0].Plugin != "counts@3" || ds[0].Status != api.StatusRunning {
		t.Fatalf("after the refusal: %+v %v, want counts@3 running", ds, err)
	}
	r.produce(500)
	eventually(t, time.Minute, "counts@3 counting", r.counted)

	other, _ := newTopic(t, e, 2)
	spec := fmt.Sprintf(`{"name":"polls","plugin":"counts@3","topic":%q,"windows":[{"name":"total","kind":"global"}]}`, other)
	if code, body := r.h.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusConflict || !strings.Contains(string(body), "keeps its topic") {
		t.Fatalf("deploy polls onto another topic: %d %s, want 409", code, body)
	}
	// Undeployed, the name still has its table and checkpoints.
	req, _ := http.NewRequest(http.MethodDelete, r.h.url+"/v1/deployments/polls", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	if code, body := r.h.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusConflict || !strings.Contains(string(body), "kept after it was undeployed") {
		t.Fatalf("deploy polls onto another topic once undeployed: %d %s, want 409", code, body)
	}
	if code, body := r.deploy("counts@3", ""); code != http.StatusCreated {
		t.Fatalf("deploy polls again onto its topic: %d %s", code, body)
	}
	r.produce(100)
	eventually(t, time.Minute, "counted on after a delete and a deploy", r.counted)
}

// A plugin that declares it migrates the state version of a deployment's
// checkpoints takes them over converted: here version 2 counts tenths of a
// vote and multiplies version 1's whole votes by 10 as it restores them, so
// the view shows exactly 10 per vote produced, before the switch or after,
// only if nothing was lost, counted twice or left unconverted. A version
// neither accepted nor migrated is still refused, downgrades included.
func TestUpgrade_MigratesStateTheNewPluginDeclaresItConverts(t *testing.T) {
	r := newPollsRig(t, services(t), map[string]string{"1": "internal/testwasm/panics", "2": "internal/testwasm/statev2", "4": "internal/testwasm/statev2migrate", "5": "examples/votes"})
	h, ctx := r.h, context.Background()
	deploy := func(plugin string) (int, api.ErrorBody) {
		code, body := r.deploy(plugin, "")
		var eb api.ErrorBody
		json.Unmarshal(body, &eb)
		return code, eb
	}
	checkpointed := func(version uint32) func() error {
		return func() error {
			var n uint64
			if err := h.ch.QueryRow(ctx, "SELECT count() FROM "+h.db+"."+checkpoint.Table+" FINAL WHERE deployment = 'polls' AND state_version = ?", version).Scan(&n); err != nil {
				return err
			}
			if n != 2 {
				return fmt.Errorf("%d partitions checkpointed with state version %d, want 2", n, version)
			}
			return nil
		}
	}
	// tenths checks the view: 10 per vote produced, poll by poll (votes go
	// round polls 1 to 10).
	tenths := func() error {
		rows, err := h.ch.Query(ctx, "SELECT poll_id, toInt64(sum(votes)) FROM "+h.db+".polls WHERE window_name = 'total' GROUP BY poll_id")
		if err != nil {
			return err
		}
		defer rows.Close()
		got := map[int64]int64{}
		for rows.Next() {
			var poll, n int64
			if err := rows.Scan(&poll, &n); err != nil {
				return err
			}
			got[poll] = n
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for poll := int64(1); poll <= 10; poll++ {
			if want := 10 * int64(r.produced/10); got[poll] != want {
				return fmt.Errorf("poll %d: %d tenths of a vote in the view, want %d (all %v)", poll, got[poll], want, got)
			}
		}
		return nil
	}

	if code, eb := deploy("counts@1"); code != http.StatusCreated {
		t.Fatalf("deploy counts@1: %d %+v", code, eb)
	}
	r.produce(1000)
	eventually(t, time.Minute, "counts@1 counted the votes", r.counted)
	eventually(t, time.Minute, "checkpoints of state version 1", checkpointed(1))

	// Version 2 neither accepting nor migrating version 1: refused, and the
	// refusal names migrating as a way on.
	code, eb := deploy("counts@2")
	if code != http.StatusConflict || eb.Error.Code != api.CodeConflict {
		t.Fatalf("deploy counts@2 onto state version 1: %d %+v, want 409 conflict", code, eb)
	}
	for _, want := range []string{"state version 1 written by counts@1", "accepts no older version and migrates no older version", "declare that it migrates state version 1 (Go SDK: Spec.State.Migrates and Spec.Migrate)"} {
		if !strings.Contains(eb.Error.Message, want) {
			t.Errorf("refusal %q does not say %q", eb.Error.Message, want)
		}
	}

	// State version 1 too, but other columns (votes per poll and option):
	// its rows could not go to the table, so it is refused before the state
	// is even looked at.
	code, eb = deploy("counts@5")
	if code != http.StatusConflict || !strings.Contains(eb.Error.Message, "counts@5 writes other columns than the deployment's table: the table has no column option") {
		t.Fatalf("deploy counts@5 (other columns) in place: %d %+v, want 409 naming the column", code, eb)
	}

	// Votes keep coming while the plugin changes: those counts@1 read after
	// its last checkpoint are counted again by counts@4, from the restored
	// state, in tenths.
	r.produce(500)
	if code, eb := deploy("counts@4"); code != http.StatusCreated {
		t.Fatalf("deploy counts@4: %d %+v", code, eb)
	}
	r.produce(1000)
	eventually(t, time.Minute, "counts@4 counted on from the migrated state, 10 per vote", tenths)
	eventually(t, time.Minute, "checkpoints of state version 2", checkpointed(2))

	// Restarting from its own checkpoints now, it does not migrate again.
	if code, eb := deploy("counts@4"); code != http.StatusCreated {
		t.Fatalf("deploy counts@4 again: %d %+v", code, eb)
	}
	r.produce(500)
	eventually(t, time.Minute, "counts@4 counted on from its own state", tenths)

	// Back to version 1, which knows nothing of version 2: refused.
	code, eb = deploy("counts@1")
	if code != http.StatusConflict || !strings.Contains(eb.Error.Message, "state version 2 written by counts@4") {
		t.Fatalf("deploy counts@1 onto state version 2: %d %+v, want 409 conflict naming counts@4", code, eb)
	}
	var ds []api.Deployment
	if err := getJSON(h.url+"/v1/deployments", &ds); err != nil || len(ds) != 1 || ds[0].Plugin != "counts@4" || ds[0].Status != api.StatusRunning {
		t.Fatalf("after the refusal: %+v %v, want counts@4 running", ds, err)
	}
}
