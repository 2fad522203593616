package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/hub"
)

// A deploy with ?start=earliest of a plugin that cannot take the state over
// backfills into a new generation beside the running one; the view and the
// live subscribers move over only once it has caught up, so that the view
// shows the same total at every read while it does, and the counts go on.
func TestBackfill_FreshStartTakesOverOnceCaughtUp(t *testing.T) {
	r := newPollsRig(t, services(t), map[string]string{"1": "internal/testwasm/panics", "2": "internal/testwasm/statev2"})
	h, ctx, deploy, produce, total, counted := r.h, context.Background(), r.deploy, r.produce, r.total, r.counted
	if code, body := deploy("counts@1", ""); code != http.StatusCreated {
		t.Fatalf("deploy counts@1: %d %s", code, body)
	}
	produce(3000)
	eventually(t, time.Minute, "counts@1 counted", counted)
	if code, _ := deploy("counts@2", ""); code != http.StatusConflict {
		t.Fatalf("deploy counts@2 in place: %d, want the upgrade refused", code)
	}
	if code, body := deploy("counts@2", "?start=nonsense"); code != http.StatusBadRequest || !strings.Contains(string(body), "earliest") {
		t.Fatalf("a bad start: %d %s", code, body)
	}

	// Every read of the view while the new generation catches up and takes
	// over shows the whole count: no gap, no double.
	var reads []string
	var mu sync.Mutex
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := total()
			if err != nil || n != int64(r.produced) {
				mu.Lock()
				reads = append(reads, fmt.Sprintf("%d %v", n, err))
				mu.Unlock()
			}
		}
	}()
	code, body := deploy("counts@2", "?start=earliest")
	var st api.Deployment
	json.Unmarshal(body, &st)
	var gen int
	if _, err := fmt.Sscanf(st.Backfill, "generation %d from earliest", &gen); code != http.StatusCreated || st.Plugin != "counts@1" || err != nil || gen <= 0 {
		t.Fatalf("deploy counts@2 -start earliest: %d %s, want counts@1 running and a backfill of a new generation", code, body)
	}
	eventually(t, 2*time.Minute, "the new generation took over", func() error {
		var ds []api.Deployment
		if err := getJSON(h.url+"/v1/deployments", &ds); err != nil {
			return err
		}
		if len(ds) != 1 || ds[0].Plugin != "counts@2" || ds[0].Generation != gen || ds[0].Backfill != "" || ds[0].Status != api.StatusRunning {
			return fmt.Errorf("deployments: %+v", ds)
		}
		return nil
	})
	eventually(t, time.Minute, "the new generation checkpointed after taking over", func() error {
		var n uint64
		err := h.ch.QueryRow(ctx, "SELECT count() FROM "+h.db+"._wagg_checkpoints FINAL WHERE deployment = ? AND state_version = 2", fmt.Sprintf("polls__g%d", gen)).Scan(&n)
		if err == nil && n != 2 {
			err = fmt.Errorf("%d partitions of generation %d checkpointed", n, gen)
		}
		return err
	})
	close(stop)
	<-polled
	if len(reads) > 0 {
		t.Errorf("%d reads of the view during the switch did not show %d: %v", len(reads), r.produced, reads[:min(len(reads), 10)])
	}

	// The counts go on in the new generation, in the view and live.
	produce(1000)
	eventually(t, time.Minute, "the new generation counts on", counted)
	live, err := hub.Dial(ctx, strings.Replace(h.url, "http", "ws", 1)+"/v1/live", hub.Subscribe{Aggregator: "polls"})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	view := &hub.View{}
	eventually(t, time.Minute, "the live view follows the new generation", func() error {
		fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		for {
			f, err := live.Next(fctx)
			if err != nil {
				break
			}
			if err := view.Apply(f); err != nil {
				t.Fatal(err)
			}
		}
		var n int64
		for _, r := range view.Rows() {
			v, _ := r.Values["votes"].Int64()
			n += v
		}
		if n != int64(r.produced) {
			return fmt.Errorf("live total %d, want %d", n, r.produced)
		}
		return nil
	})
	var old int64
	if err := h.ch.QueryRow(ctx, "SELECT toInt64(sum(votes)) FROM "+h.db+".polls__view WHERE window_name = 'total'").Scan(&old); err != nil || old < 3000 {
		t.Errorf("the old generation's view polls__view: %d %v, want it kept with its 3000", old, err)
	}

	// Deleted and deployed again, it goes on with the generation its view
	// shows.
	req, _ := http.NewRequest(http.MethodDelete, h.url+"/v1/deployments/polls", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	if code, body := deploy("counts@2", ""); code != http.StatusCreated || !strings.Contains(string(body), fmt.Sprintf(`"generation": %d,`, gen)) {
		t.Fatalf("deploy again: %d %s, want generation %d", code, body, gen)
	}
	produce(200)
	eventually(t, time.Minute, "counted on after a delete and a deploy", counted)
}

// A fresh start from a time counts the records from then on only, and
// takes over even where a partition has none of them.
func TestBackfill_FromATimeCountsOnlyLaterRecords(t *testing.T) {
	r := newPollsRig(t, services(t), map[string]string{"1": "internal/testwasm/panics"})
	if code, body := r.deploy("counts@1", ""); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	r.produceAt(1000, time.Now().Add(-time.Hour))
	eventually(t, time.Minute, "the first generation counted", r.counted)
	since := time.Now().Add(-time.Minute)
	r.produceAt(1, time.Now()) // one partition gets a record after since, the other none
	r.produced = 1
	if code, body := r.deploy("counts@1", "?start="+since.UTC().Format(time.RFC3339)); code != http.StatusCreated {
		t.Fatalf("deploy -start %s: %d %s", since.Format(time.RFC3339), code, body)
	}
	eventually(t, time.Minute, "the new generation took over", func() error {
		var ds []api.Deployment
		if err := getJSON(r.h.url+"/v1/deployments", &ds); err != nil {
			return err
		}
		if len(ds) != 1 || ds[0].Generation == 0 || ds[0].Backfill != "" {
			return fmt.Errorf("deployments: %+v", ds)
		}
		return nil
	})
	eventually(t, time.Minute, "the view counts the record after the start only", r.counted)
}
