package server_test

import (
	"context"
	"errors"
	"path/filepath"
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
	url, args := serveArgs(t, pe, cfg)
	logf := serveLog(t, filepath.Join(cfg.DataDir, "serve.log"), 20000)
	defer logf.Close()
	p := startServe(t, bin, args, nil, logf)
	stopAtCleanup(t, &p)
	eventually(t, time.Minute, "wagg serve answers", answers(url))
	h := &host{url: url, db: cfg.ClickHouse.Database}
	var err error
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
		eventually(t, time.Minute, "wagg serve answers again", answers(url))
	}
	progress("progress at first")

	ch.run("kill")
	<-time.After(2 * time.Second)
	p.kill()
	p = startServe(t, bin, args, nil, logf) // starts while ClickHouse is away
	<-time.After(5 * time.Second)
	ch.run("up")
	eventually(t, time.Minute, "wagg serve answers once ClickHouse is back", answers(url))
	progress("progress once ClickHouse is back")

	k.run("kill")
	p.kill()
	k.run("up")
	p = startServe(t, bin, args, nil, logf)
	eventually(t, time.Minute, "wagg serve answers after the broker restart", answers(url))
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
	checkMalformedDeadLettered(t, dl, x, true)
	report(t, "%d votes exact (%d acknowledged, %d reported lost by the producer), %d malformed dead-lettered (%d dead letters: a record replayed after a kill is dead-lettered again)",
		x.votes, sent, lost, len(x.malformed), len(dl))
}
