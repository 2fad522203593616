package server_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// The faults of the suite in one run, some at once, under a producer of
// out-of-order votes and malformed records: ClickHouse killed and the host
// killed while it is away, then started before it is back; the broker and
// the host killed together; a deploy in place under load; ClickHouse and
// the broker killed together; a last kill -9 of the host. Exact at the
// end, every malformed record dead-lettered.
func TestFaults_EverythingAtOnce(t *testing.T) {
	services(t)
	ch := startPrivate(t, "clickhouse", 19100)
	k := startPrivate(t, "kafka", 19200)
	pe := env{brokers: []string{k.addr()}, chAddr: ch.addr()}
	topic, cl := newTopic(t, pe, 4)
	cfg := hostConfig(t, pe)
	bin := buildWagg(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	url := "http://" + addr
	args := []string{"-listen", addr, "-data-dir", cfg.DataDir, "-kafka", k.addr(),
		"-clickhouse", ch.addr(), "-database", cfg.ClickHouse.Database}
	logf := serveLog(t, filepath.Join(cfg.DataDir, "serve.log"), 20000)
	defer logf.Close()
	p := startServe(t, bin, args, nil, logf)
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.kill()
		}
	})
	answers := func() error {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	eventually(t, time.Minute, "wagg serve answers", answers)
	h := &host{url: url, db: cfg.ClickHouse.Database}
	h.ch, err = clickhouse.Open(&clickhouse.Options{Addr: []string{ch.addr()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.ch.Close() })
	h.deployVotes(t, "votes", topic, `,"lateness":"5m","checkpoint_every":"300ms"`)
	prod := startProducer(cl, 3000, 2*time.Second, 700)
	progress := func(what string) {
		t.Helper()
		var before float64 = -1
		eventually(t, 3*time.Minute, what, func() error {
			v, err := metric(url, "wagg_checkpoints_total", `result="ok"`)
			if err != nil {
				return err
			}
			if before < 0 || v <= before {
				before = v
				return errors.New("no new checkpoint")
			}
			return nil
		})
	}
	restart := func() {
		p.kill()
		p = startServe(t, bin, args, nil, logf)
		eventually(t, time.Minute, "wagg serve answers again", answers)
	}
	progress("progress at first")

	ch.run("kill")
	<-time.After(2 * time.Second)
	p.kill()
	p = startServe(t, bin, args, nil, logf) // starts while ClickHouse is away
	<-time.After(5 * time.Second)
	ch.run("up")
	eventually(t, time.Minute, "wagg serve answers once ClickHouse is back", answers)
	progress("progress once ClickHouse is back")

	k.run("kill")
	p.kill()
	k.run("up")
	p = startServe(t, bin, args, nil, logf)
	eventually(t, time.Minute, "wagg serve answers after the broker restart", answers)
	progress("progress after the broker and host restart")

	h.deployVotes(t, "votes", topic, `,"lateness":"5m","checkpoint_every":"500ms"`)
	progress("progress after a deploy in place")

	ch.run("kill")
	k.run("kill")
	<-time.After(3 * time.Second)
	k.run("up")
	ch.run("up")
	progress("progress after both came back")
	restart()
	progress("progress after the last kill")

	sent, lost := prod.finish()
	x := readTopic(t, pe.brokers, topic)
	eventually(t, 3*time.Minute, "exact totals and windows", func() error { return h.check(context.Background(), x) })
	dl := deadLetters(t, pe.brokers, topic+".dead-letters")
	seen := map[string]bool{}
	for _, d := range dl {
		if r := header(d, "wagg.reason"); r != "malformed" {
			t.Fatalf("dead letter %s: %s", r, header(d, "wagg.error"))
		}
		seen[header(d, "wagg.partition")+"/"+header(d, "wagg.offset")] = true
	}
	for m := range x.malformed {
		if !seen[m] {
			t.Fatalf("malformed record %s not dead-lettered", m)
		}
	}
	report(t, "%d votes exact (%d acknowledged, %d reported lost by the producer), %d malformed dead-lettered (%d dead letters: a record replayed after a kill is dead-lettered again)",
		x.votes, sent, lost, len(x.malformed), len(dl))
}
