package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/wagg/wagg/internal/testwasm"
)

// BenchmarkCluster_CatchUp measures how fast 1, 2 and 3 `wagg serve`
// processes on this machine work off a backlog of 500k votes on 12
// partitions together (events/s, and CPU seconds of all hosts per million
// events), and, with more than one host, the failover time: from a kill -9
// of one host until the others own all partitions (the session timeout
// bounds it). Run with -benchtime 1x (BENCHMARKS.md).
func BenchmarkCluster_CatchUp(b *testing.B) {
	for _, n := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			for range b.N {
				clusterCatchUp(b, n)
			}
		})
	}
}

func clusterCatchUp(b *testing.B, hosts int) {
	e := services(b)
	const partitions, backlog = 12, 500_000
	topic, cl := newTopic(b, e, partitions)
	db := fmt.Sprintf("wagg_bench_%d", time.Now().UnixNano())
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{e.chAddr}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		ch.Close()
		deleteClusterTopics(e, db)
	})
	produceBacklog(b, cl, backlog)
	bin := buildWagg(b)
	logf, err := os.Create(filepath.Join(b.TempDir(), "serve.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	var hs []*clusterHost
	for i := range hosts {
		hs = append(hs, startClusterHost(b, bin, fmt.Sprintf("h%d", i), e, db, logf))
	}
	h0 := &host{url: hs[0].url}
	if code, body := h0.post(b, "/v1/plugins/votes/1", "application/wasm", testwasm.Build(b, "examples/votes")); code != http.StatusCreated {
		b.Fatalf("push: %d %s", code, body)
	}
	for _, h := range hs {
		eventually(b, time.Minute, h.name+" has the plugin", func() error {
			if len(hs) == 1 {
				return nil
			}
			var ps []any
			if err := getJSON(h.url+"/v1/plugins", &ps); err != nil || len(ps) == 0 {
				return fmt.Errorf("plugins %v %v", ps, err)
			}
			return nil
		})
	}
	b.ResetTimer()
	start := time.Now()
	spec := fmt.Sprintf(`{"name":"votes","plugin":"votes@1","topic":%q,"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"total","kind":"global"}]}`, topic)
	if code, body := h0.post(b, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
		b.Fatalf("deploy: %d %s", code, body)
	}
	eventually(b, 10*time.Minute, "the backlog is checkpointed", func() error {
		var n int64
		ch.QueryRow(context.Background(), "SELECT toInt64(sum(next_offset)) FROM "+db+"._wagg_checkpoints FINAL WHERE deployment = 'votes'").Scan(&n)
		if n < backlog+backlog/1000 {
			return fmt.Errorf("at %d", n)
		}
		return nil
	})
	d := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(backlog)/d.Seconds(), "events/s")
	if hosts > 1 {
		killed := time.Now()
		hs[hosts-1].p.kill()
		eventually(b, time.Minute, "the other hosts own every partition", func() error {
			var owned float64
			for _, h := range hs[:hosts-1] {
				v, err := metric(h.url, "wagg_partitions_owned")
				if err != nil {
					return err
				}
				owned += v
			}
			if owned < partitions {
				return fmt.Errorf("%v of %d owned", owned, partitions)
			}
			return nil
		})
		b.ReportMetric(time.Since(killed).Seconds(), "failover-s")
		hs = hs[:hosts-1]
	}
	var cpu time.Duration
	for _, h := range hs {
		h.p.cmd.Process.Signal(syscall.SIGTERM)
		<-h.p.done
		cpu += h.p.cmd.ProcessState.UserTime() + h.p.cmd.ProcessState.SystemTime()
	}
	b.ReportMetric(cpu.Seconds()/(backlog/1e6), "cpu-s/M-events")
}
