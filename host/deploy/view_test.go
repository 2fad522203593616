package deploy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sink"
)

// Every host that applies a switch-over makes the view show the new
// generation: hosts that race, and a host that comes back after one did
// it, all succeed, and the view is switched once.
func TestShowView_HostsThatRaceOrComeBackSwitchOnce(t *testing.T) {
	addr := os.Getenv("WAGG_TEST_CLICKHOUSE")
	if addr == "" {
		t.Skip("integration test: needs the ClickHouse that `make test` starts (WAGG_TEST_CLICKHOUSE)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	db := fmt.Sprintf("wagg_view_%d_%d", time.Now().Unix(), rand.IntN(1e6))
	if err := ch.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	defer ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
	s := &abi.Schema{Keys: []abi.Column{{Name: "poll_id", Type: abi.Int64}}, Metrics: []abi.Metric{{Name: "votes", Kind: abi.Count, Type: abi.Int64}}}
	w := []abi.Window{{Kind: abi.Global}}
	// Generation 0 shows in "votes"; generation 7 was given up (its hidden
	// view stays); generation 12 is the one switched to.
	for _, g := range []struct{ view, storage string }{{"votes", "votes"}, {"votes__g7__view", "votes__g7"}, {"votes__g12__view", "votes__g12"}} {
		if _, err := sink.Ensure(ctx, ch, db, g.view, g.storage, s, w); err != nil {
			t.Fatal(err)
		}
	}
	m := &Manager{o: Options{ClickHouse: ch, Database: db}}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.showView(ctx, "votes", "votes__g12")
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("host %d: %v", i, err)
		}
	}
	if err := m.showView(ctx, "votes", "votes__g12"); err != nil {
		t.Errorf("a host that comes back after the switch: %v", err)
	}
	ts, err := sink.Tables(ctx, ch, db, "votes")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"votes": true, "votes__view": true, "votes__g7__view": true, "votes__g12__view": false} {
		if ts[name] != want {
			t.Errorf("%s exists: %v, want %v (tables %v)", name, ts[name], want, ts)
		}
	}
	var create string
	if err := ch.QueryRow(ctx, "SELECT create_table_query FROM system.tables WHERE database = ? AND name = 'votes'", db).Scan(&create); err != nil {
		t.Fatal(err)
	}
	if want := "votes__g12__partitions"; !strings.Contains(create, want) {
		t.Errorf("the view reads %q, want %s", create, want)
	}
	if g, err := m.viewGeneration(ctx, "votes"); err != nil || g != 12 {
		t.Errorf("viewGeneration: %d %v, want 12", g, err)
	}
}
