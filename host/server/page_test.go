package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/internal/gen"
	"github.com/wagg/wagg/internal/testwasm"
)

// bigGroups is the size of the running totals the page must load without
// missing a frame.
const bigGroups = 100_000

// badVotes are records of the votes topic that are dead-lettered.
const badVotes = 3

// TestPage_InTheBrowser drives host/web/e2e/page.test.mjs: the chart over
// history and live and its seam against ClickHouse, the SQL console,
// upload, deploy and undeploy with the deployments view and its dead
// letters, wagg.js resuming over WebSocket and SSE, and the page's thread
// while a snapshot of 100k groups loads. With WAGG_E2E_SCREENSHOTS=dir it leaves a screenshot
// of each page there (docs/ holds the committed ones).
func TestPage_InTheBrowser(t *testing.T) {
	e := services(t)
	topic, cl := newTopic(t, e, 4)
	bigTopic, bigCl := newTopic(t, e, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Forty seconds of votes before the host starts, so the first panes
	// are history by the time the page subscribes.
	g := gen.New(gen.Options{Seed: 7, Polls: 50})
	now := time.Now()
	var recs []*kgo.Record
	for ms := now.Add(-40 * time.Second).UnixMilli(); ms < now.UnixMilli(); ms += 10 {
		v := g.Next(ms)
		recs = append(recs, &kgo.Record{Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: time.UnixMilli(ms)})
	}
	// And records the aggregator cannot read, for the dead-letter browser.
	for i := range badVotes {
		recs = append(recs, &kgo.Record{Key: []byte("bad"), Value: []byte(fmt.Sprintf(`{"poll_id":"bad %d","option":"x"}`, i)), Timestamp: now})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Then votes as they happen, until the test ends.
	var wg sync.WaitGroup
	wg.Add(1)
	defer wg.Wait()
	defer cancel()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			v := g.Next(time.Now().UnixMilli())
			cl.Produce(ctx, &kgo.Record{Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: time.Now()}, nil)
		}
	}()
	// One vote for each of bigGroups (poll, option) groups.
	recs = recs[:0]
	for i := range bigGroups {
		v := gen.Vote{PollID: int64(i / 8), Option: "option-" + strconv.Itoa(i%8), UserID: "u", TS: now.UnixMilli()}
		recs = append(recs, &kgo.Record{Value: v.AppendJSON(nil), Timestamp: now})
	}
	if err := bigCl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	h := startHost(t, e)
	wasm := testwasm.Build(t, "examples/votes")
	wasmFile := filepath.Join(t.TempDir(), "votes.wasm")
	if err := os.WriteFile(wasmFile, wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, body := h.post(t, "/v1/plugins/votes/1", "application/wasm", wasm); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	for _, spec := range []string{
		fmt.Sprintf(`{"name":"votes","plugin":"votes@1","topic":%q,
			"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"total","kind":"global"}],
			"lateness":"1s","checkpoint_every":"500ms"}`, topic),
		fmt.Sprintf(`{"name":"big","plugin":"votes@1","topic":%q,"windows":[{"name":"total","kind":"global"}]}`, bigTopic),
	} {
		if code, body := h.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
			t.Fatalf("deploy: %d %s", code, body)
		}
	}
	eventually(t, 2*time.Minute, "the votes history and the big totals in ClickHouse", func() error {
		var panes, groups uint64
		if err := h.ch.QueryRow(ctx, "SELECT uniqExact(window_start) FROM "+h.db+".votes WHERE window_name = 'second' AND is_final = 1").Scan(&panes); err != nil {
			return err
		}
		if err := h.ch.QueryRow(ctx, "SELECT count() FROM "+h.db+".big WHERE window_name = 'total'").Scan(&groups); err != nil {
			return err
		}
		if panes < 30 || groups < bigGroups {
			return fmt.Errorf("%d final panes, %d groups", panes, groups)
		}
		return nil
	})

	// What the deployments view shows: owners and lag per partition,
	// counters, the last dead letters with their source.
	eventually(t, time.Minute, "the stats of votes", func() error {
		var st api.Stats
		if err := getJSON(h.url+"/v1/deployments/votes/stats", &st); err != nil {
			return err
		}
		if len(st.Partitions) != 4 || st.Records["processed"] == 0 || st.DeadLetters["malformed"] != badVotes {
			return fmt.Errorf("stats %+v", st)
		}
		for _, p := range st.Partitions {
			if p.Owner != st.Host || p.End <= 0 || p.Lag < 0 || p.Lag > p.End {
				return fmt.Errorf("partition %+v (host %s)", p, st.Host)
			}
		}
		return nil
	})
	eventually(t, time.Minute, "the last 2 dead letters of votes", func() error {
		var dls []api.DeadLetter
		if err := getJSON(h.url+"/v1/deployments/votes/dead-letters?n=2", &dls); err != nil {
			return err
		}
		if len(dls) != 2 {
			return fmt.Errorf("%d dead letters: %+v", len(dls), dls)
		}
		for _, d := range dls {
			if d.Reason != "malformed" || d.Source.Topic != topic || !strings.HasPrefix(d.Value, `{"poll_id":"bad `) || d.Error == "" {
				t.Fatalf("dead letter %+v", d)
			}
		}
		return nil
	})
	if code, body := h.get(t, "/v1/deployments/nope/stats"); code != http.StatusNotFound {
		t.Fatalf("stats of nothing: %d %s", code, body)
	}

	e2e(t, "page.test.mjs", 7, "WAGG_E2E_BASE="+h.url, "WAGG_E2E_DB="+h.db, "WAGG_E2E_TOPIC="+topic,
		"WAGG_E2E_WASM="+wasmFile, fmt.Sprintf("WAGG_E2E_BIG_GROUPS=%d", bigGroups), fmt.Sprintf("WAGG_E2E_BAD=%d", badVotes))
}

func (h *host) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(h.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}
