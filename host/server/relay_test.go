package server_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/relay"
	"github.com/wagg/wagg/internal/testwasm"
)

// pair is two `wagg serve` processes running the votes deployment, with a
// dashboard on each.
type pair struct {
	e       env
	db      string
	topic   string
	cl      *kgo.Client
	checker *host
	hosts   []*clusterHost
	dash    []*follower
}

func startPair(t *testing.T, partitions int) *pair {
	t.Helper()
	r := newClusterRig(t, partitions)
	e, db, bin, logf := r.e, r.db, r.bin, r.logf
	p := &pair{e: e, db: db, topic: r.topic, cl: r.cl, checker: &host{db: db, ch: r.ch}}
	for _, name := range []string{"a", "b"} {
		p.hosts = append(p.hosts, startClusterHost(t, bin, name, e, db, logf))
	}
	ha := &host{url: p.hosts[0].url}
	if code, body := ha.post(t, "/v1/plugins/votes/1", "application/wasm", testwasm.Build(t, "examples/votes")); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	spec := fmt.Sprintf(`{"name":"votes","plugin":"votes@1","topic":%q,"lateness":"5s","checkpoint_every":"300ms",
		"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"total","kind":"global"}]}`, r.topic)
	if code, body := ha.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	for _, h := range p.hosts {
		eventually(t, time.Minute, "votes runs on "+h.name+" with a share of the partitions", func() error {
			ds, err := deployments(h)
			if err != nil {
				return err
			}
			if len(ds) != 1 || ds[0].Status != api.StatusRunning {
				return fmt.Errorf("deployments %+v", ds)
			}
			if n, err := metric(h.url, "wagg_partitions_owned"); err != nil || n == 0 {
				return fmt.Errorf("owns %v partitions (%v)", n, err)
			}
			return nil
		})
		p.dash = append(p.dash, follow(t, h))
	}
	return p
}

// end stops the votes and checks ClickHouse and each dashboard against the
// topic.
func (p *pair) end(t *testing.T, votes *producer) expected {
	t.Helper()
	votes.finish()
	x := readTopic(t, p.e.brokers, p.topic)
	eventually(t, 3*time.Minute, "exact totals and windows in ClickHouse", func() error { return p.checker.check(context.Background(), x) })
	for i, f := range p.dash {
		eventually(t, time.Minute, "the dashboard on "+p.hosts[i].name+" shows what ClickHouse holds", func() error {
			got, err := f.totals()
			if err != nil {
				return err
			}
			stored, err := p.checker.totals(context.Background())
			if err != nil {
				return err
			}
			if err := diff(stored, x.totals); err != nil {
				return fmt.Errorf("ClickHouse: %w", err)
			}
			return diff(got, stored)
		})
		if f.moves > 0 {
			t.Errorf("the dashboard on %s moved to another host", p.hosts[i].name)
		}
	}
	return x
}

// checkpointed waits until every partition below n has a checkpoint.
func (p *pair) checkpointed(t *testing.T, n int) {
	t.Helper()
	eventually(t, 2*time.Minute, fmt.Sprintf("checkpoints of %d partitions", n), func() error {
		var got uint64
		err := p.checker.ch.QueryRow(context.Background(), "SELECT count() FROM "+p.db+"._wagg_checkpoints FINAL WHERE deployment = 'votes' AND next_offset > 0").Scan(&got)
		if err == nil && got < uint64(n) {
			err = fmt.Errorf("%d", got)
		}
		return err
	})
}

// The source topic of a deployment running on two hosts gains partitions:
// both hosts take them up (within the group's metadata refresh), the relay
// topic keeps its two partitions (the new source partitions map onto
// them), and a dashboard on each host ends equal to ClickHouse, exact
// against the topic, no total ever going back.
func TestRelay_SourceTopicGainsPartitionsWhileTwoHostsRun(t *testing.T) {
	p := startPair(t, 2)
	votes := startProducer(p.cl, 1000, time.Second, 500)
	p.checkpointed(t, 2)
	adm := kadm.NewClient(p.cl)
	ctx := context.Background()
	if res, err := adm.CreatePartitions(ctx, 2, p.topic); err != nil || res.Error() != nil {
		t.Fatalf("adding partitions: %v %v", err, res.Error())
	}
	p.cl.ForceMetadataRefresh()
	p.checkpointed(t, 4) // the new partitions are processed
	eventually(t, time.Minute, "votes in the new partitions", func() error {
		ends, err := adm.ListEndOffsets(ctx, p.topic)
		if err != nil {
			return err
		}
		for _, q := range []int32{2, 3} {
			if o, _ := ends.Lookup(p.topic, q); o.Offset < 100 {
				return fmt.Errorf("partition %d at offset %d", q, o.Offset)
			}
		}
		return nil
	})
	x := p.end(t, votes)
	tds, err := adm.ListTopics(ctx, relay.Topic(p.db, "votes"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tds[relay.Topic(p.db, "votes")].Partitions); n != 2 {
		t.Errorf("the relay topic has %d partitions, want the 2 it was made with", n)
	}
	report(t, "source topic grown from 2 to 4 partitions under 2 hosts: %d votes exact in ClickHouse and on both dashboards", x.votes)
}

// The relay topic is deleted while two hosts run and votes flow: each
// host makes it again and follows each partition again from its next
// checkpoint; meanwhile the partitions processed on the other host stand
// at the last values shown (never a total going back), and the dashboards
// end equal to ClickHouse.
func TestRelay_RelayTopicDeletedWhileTwoHostsRun(t *testing.T) {
	p := startPair(t, 4)
	votes := startProducer(p.cl, 1000, time.Second, 500)
	p.checkpointed(t, 4)
	adm := kadm.NewClient(p.cl)
	ctx := context.Background()
	name := relay.Topic(p.db, "votes")
	before, err := adm.ListTopics(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adm.DeleteTopics(ctx, name); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the relay topic made again", func() error {
		tds, err := adm.ListTopics(ctx, name)
		if err != nil {
			return err
		}
		if td := tds[name]; td.Err != nil || td.ID == before[name].ID {
			return fmt.Errorf("%s: id %v, err %v", name, td.ID, td.Err)
		}
		return nil
	})
	// Votes go on long enough for checkpoints past the new topic.
	n := votes.count()
	eventually(t, time.Minute, "more votes", func() error {
		if votes.count() < n+3000 {
			return fmt.Errorf("%d", votes.count())
		}
		return nil
	})
	x := p.end(t, votes)
	report(t, "relay topic deleted under 2 hosts: %d votes exact in ClickHouse and on both dashboards", x.votes)
}
