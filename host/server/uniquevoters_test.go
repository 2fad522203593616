package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/hub"
	"github.com/wagg/wagg/internal/gen"
	"github.com/wagg/wagg/internal/testwasm"
)

// pollPane is one poll in one 5-minute window.
type pollPane struct{ start, poll int64 }

// distinctValue is a pane's votes and unique voters as ClickHouse or the
// live view has them.
type distinctValue struct {
	votes, voters int64
	final         bool
}

// TestUniqueVoters_WithinTheSketchErrorInClickHouseAndLive deploys
// examples/uniquevoters (unique voters per poll in a 5-minute window sliding
// by a minute) on votes whose users are spread over four partitions, so
// that each pane's voters are counted in several partitions and only the
// merge of their sketches counts each once. Two hosts share the partitions,
// so each host's live view merges its own partitions' sketches with those
// the other relays. Once every pane is final, ClickHouse's view and both
// live views must agree, count the votes exactly, and estimate each pane's
// voters within 3 standard errors (abi/ABI.md) of the exact count of its
// users.
func TestUniqueVoters_WithinTheSketchErrorInClickHouseAndLive(t *testing.T) {
	e := services(t)
	const votes, partitions = 30_000, 4
	window := abi.Window{Name: "five_minutes", Kind: abi.Hopping, SizeMs: 300_000, SlideMs: 60_000}
	topic, cl := newTopic(t, e, partitions)

	ctx := context.Background()
	cfg := hostConfig(t, e)
	h := runHost(t, e, cfg)
	if code, body := h.post(t, "/v1/plugins/uniquevoters/1", "application/wasm", testwasm.Build(t, "examples/uniquevoters")); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	spec := fmt.Sprintf(`{"name":"uniquevoters","plugin":"uniquevoters@1","topic":%q,
		"windows":[{"name":"five_minutes","kind":"hopping","size":"5m","slide":"1m"}],
		"lateness":"2s","checkpoint_every":"500ms"}`, topic)
	if code, body := h.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	cfg.DataDir = t.TempDir()
	other := runHost(t, e, cfg) // the same cluster: the partitions are shared out
	type follower struct {
		view   *hub.View
		frames chan error
	}
	var followers []follower
	for _, on := range []*host{h, other} {
		live, err := hub.Dial(ctx, strings.Replace(on.url, "http", "ws", 1)+"/v1/live", hub.Subscribe{Aggregator: "uniquevoters"})
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		f := follower{&hub.View{}, make(chan error, 1)}
		followers = append(followers, f)
		go func() {
			for {
				fr, err := live.Next(ctx)
				if err == nil {
					err = f.view.Apply(fr)
				}
				if err != nil {
					f.frames <- err
					return
				}
			}
		}()
	}

	// Both hosts own partitions before the votes arrive, so that each
	// processes some and gets the others' rows through the relay.
	eventually(t, time.Minute, "each host owns partitions of the deployment", func() error {
		a, b := h.partitionsOwned(t), other.partitionsOwned(t)
		if a == 0 || b == 0 || a+b != partitions {
			return fmt.Errorf("the hosts own %d and %d partitions", a, b)
		}
		return nil
	})
	// Five minutes of votes, long enough ago that every window has closed:
	// at most 9 panes, within the live view's 10 closed panes per window.
	users := map[pollPane]map[string]bool{}
	counts := map[pollPane]int64{}
	g := gen.New(gen.Options{Seed: 11, Polls: 20, Users: 4000})
	t0 := time.Now().Add(-15 * time.Minute).Truncate(time.Minute).UnixMilli()
	var recs []*kgo.Record
	for i := range votes {
		v := g.Next(t0 + int64(i)*10)
		// Keyed by the vote, not the user or the poll: a user's votes and a
		// poll's voters land on every partition.
		recs = append(recs, &kgo.Record{Key: strconv.AppendInt(nil, int64(i), 10), Value: v.AppendJSON(nil), Timestamp: time.UnixMilli(v.TS)})
		for _, s := range window.Starts(v.TS, nil) {
			p := pollPane{s, v.PollID}
			if users[p] == nil {
				users[p] = map[string]bool{}
			}
			users[p][v.UserID] = true
			counts[p]++
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// complete checks that got has every pane, final, with its exact votes.
	complete := func(got map[pollPane]distinctValue) error {
		if len(got) != len(counts) {
			return fmt.Errorf("%d panes x polls, want %d", len(got), len(counts))
		}
		for p, n := range counts {
			if v := got[p]; v.votes != n || !v.final {
				return fmt.Errorf("%+v: %d votes (final %v), want %d, final", p, v.votes, v.final, n)
			}
		}
		return nil
	}
	var history map[pollPane]distinctValue
	eventually(t, 3*time.Minute, "ClickHouse has every pane final with its votes", func() error {
		var err error
		history, err = h.uniqueVoters(ctx)
		if err != nil {
			return err
		}
		return complete(history)
	})
	currents := make([]map[pollPane]distinctValue, len(followers))
	for i, f := range followers {
		eventually(t, time.Minute, fmt.Sprintf("host %d's live view has every pane final with its votes", i), func() error {
			select {
			case err := <-f.frames:
				t.Fatalf("host %d's live connection: %v", i, err)
			default:
			}
			current := map[pollPane]distinctValue{}
			for _, r := range f.view.Rows() {
				poll, _ := r.Key["poll_id"].(json.Number).Int64()
				n, err1 := r.Values["votes"].Int64()
				u, err2 := r.Values["voters"].Int64()
				if err1 != nil || err2 != nil {
					return fmt.Errorf("values %v", r.Values)
				}
				current[pollPane{r.Start, poll}] = distinctValue{n, u, r.Final}
			}
			currents[i] = current
			return complete(current)
		})
	}

	sigma := 1.04 / math.Sqrt(abi.SketchRegisters)
	var big int
	for p, us := range users {
		exact := float64(len(us))
		if exact > abi.SketchSparseMax {
			big++
		}
		if got := float64(history[p].voters); math.Abs(got-exact) > 3*sigma*exact {
			t.Errorf("%+v: ClickHouse estimates %v unique voters, exactly %v: beyond 3 standard errors", p, got, exact)
		}
		for i, current := range currents {
			if history[p] != current[p] {
				t.Errorf("%+v: host %d live %+v, ClickHouse %+v", p, i, current[p], history[p])
			}
		}
	}
	if big == 0 {
		t.Errorf("no pane has more than %d voters: the dense sketches went untested", abi.SketchSparseMax)
	}
}

// partitionsOwned is how many partitions of the uniquevoters deployment
// the host processes, from its metrics.
func (h *host) partitionsOwned(t *testing.T) int {
	resp, err := http.Get(h.url + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, `wagg_partitions_owned{deployment="uniquevoters"} `); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// uniqueVoters reads the uniquevoters view: per pane and poll, the votes,
// the unique voters and whether it is final.
func (h *host) uniqueVoters(ctx context.Context) (map[pollPane]distinctValue, error) {
	rows, err := h.ch.Query(ctx, "SELECT toInt64(toUInt32(window_start)) * 1000, poll_id, votes, voters, is_final FROM "+h.db+".uniquevoters WHERE window_name = 'five_minutes'")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[pollPane]distinctValue{}
	for rows.Next() {
		var p pollPane
		var v distinctValue
		var final uint8
		if err := rows.Scan(&p.start, &p.poll, &v.votes, &v.voters, &final); err != nil {
			return nil, err
		}
		v.final = final == 1
		out[p] = v
	}
	return out, rows.Err()
}
