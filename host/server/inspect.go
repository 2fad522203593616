package server

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/deploy"
	"github.com/wagg/wagg/plugins"
)

// inspectTimeout bounds the Kafka calls of Stats and DeadLetters.
const inspectTimeout = 5 * time.Second

func (s *Server) deployment(name string) (api.Deployment, error) {
	for _, d := range s.deploys.List() {
		if d.Name == name {
			return d, nil
		}
	}
	return api.Deployment{}, fmt.Errorf("no deployment %q on this host: %w", name, plugins.ErrNotFound)
}

// Stats is GET /v1/deployments/{name}/stats: the partitions of the
// deployment's consumer group (owner, committed offset, end, lag) from
// Kafka, and this host's record and dead-letter counters.
func (s *Server) Stats(ctx context.Context, name string) (api.Stats, error) {
	d, err := s.deployment(name)
	if err != nil {
		return api.Stats{}, err
	}
	st := api.Stats{Name: name, Host: s.id, At: time.Now(), Partitions: []api.PartitionStats{},
		Records: map[string]float64{}, DeadLetters: map[string]float64{}}
	mfs, err := s.prom.Gather()
	if err != nil {
		return api.Stats{}, err
	}
	for _, mf := range mfs {
		var into map[string]float64
		var by string
		switch mf.GetName() {
		case "wagg_records_total":
			into, by = st.Records, "outcome"
		case "wagg_dead_letters_total":
			into, by = st.DeadLetters, "reason"
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			var dep, key string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "deployment":
					dep = l.GetValue()
				case by:
					key = l.GetValue()
				}
			}
			if dep == d.Storage() { // the running generation's
				into[key] += m.GetCounter().GetValue()
			}
		}
	}

	ctx, cancel := context.WithTimeout(ctx, inspectTimeout)
	defer cancel()
	group := deploy.ConsumerGroup(s.cfg.ClickHouse.Database, d.Storage())
	lags, err := s.admin.Lag(ctx, group)
	l := lags[group]
	if err == nil {
		err = l.Error()
	}
	if err != nil {
		st.Error = "kafka: " + err.Error()
		return st, nil
	}
	for p, l := range l.Lag[d.Topic] {
		ps := api.PartitionStats{Partition: p, Committed: l.Commit.At, End: l.End.Offset, Lag: l.Lag}
		if l.Err != nil {
			ps.Lag = -1
		}
		if m := l.Member; m != nil {
			ps.Owner = m.ClientHost
			if m.InstanceID != nil {
				ps.Owner = *m.InstanceID
			}
		}
		st.Partitions = append(st.Partitions, ps)
	}
	sort.Slice(st.Partitions, func(i, j int) bool { return st.Partitions[i].Partition < st.Partitions[j].Partition })
	return st, nil
}

// DeadLetters is GET /v1/deployments/{name}/dead-letters: the
// deployment's records among the last n of each partition of its
// dead-letter topic (deployments on one topic share it), newest first, at
// most n, read with a client of its own from the end offsets back.
func (s *Server) DeadLetters(ctx context.Context, name string, n int) ([]api.DeadLetter, error) {
	d, err := s.deployment(name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, inspectTimeout)
	defer cancel()
	topic := d.DeadLetterTopic
	ends, err := s.admin.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w: %w", err, api.ErrUnavailable)
	}
	starts, err := s.admin.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w: %w", err, api.ErrUnavailable)
	}
	from := map[int32]kgo.Offset{}
	left := map[int32]int64{} // partition -> its end offset, until read
	for p, e := range ends[topic] {
		st := starts[topic][p]
		if e.Err != nil || st.Err != nil || e.Offset <= st.Offset {
			continue
		}
		from[p] = kgo.NewOffset().At(max(st.Offset, e.Offset-int64(n)))
		left[p] = e.Offset
	}
	out := []api.DeadLetter{}
	if len(from) == 0 {
		return out, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.cfg.Kafka.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break // what was read by then
		}
		fs.EachRecord(func(r *kgo.Record) {
			if dl, dep := deadLetter(r); dep == "" || dep == name {
				out = append(out, dl)
			}
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.After(out[j].Time)
		}
		return out[i].Partition < out[j].Partition || out[i].Partition == out[j].Partition && out[i].Offset > out[j].Offset
	})
	return out[:min(n, len(out))], nil
}

// deadLetter reads a dead-letter record and the deployment that wrote it.
func deadLetter(r *kgo.Record) (api.DeadLetter, string) {
	var dep string
	dl := api.DeadLetter{Partition: r.Partition, Offset: r.Offset, Time: r.Timestamp, Key: strings.ToValidUTF8(string(r.Key), "\uFFFD")}
	v := r.Value
	if len(v) > api.MaxDeadLetterValue {
		v, dl.Truncated = v[:api.MaxDeadLetterValue], true
	}
	dl.Value = strings.ToValidUTF8(string(v), "\uFFFD")
	for _, h := range r.Headers {
		switch h.Key {
		case "wagg.reason":
			dl.Reason = string(h.Value)
		case "wagg.error":
			dl.Error = strings.ToValidUTF8(string(h.Value), "\uFFFD")
		case "wagg.topic":
			dl.Source.Topic = string(h.Value)
		case "wagg.partition":
			p, _ := strconv.ParseInt(string(h.Value), 10, 32)
			dl.Source.Partition = int32(p)
		case "wagg.offset":
			dl.Source.Offset, _ = strconv.ParseInt(string(h.Value), 10, 64)
		case "wagg.deployment":
			dep = string(h.Value)
		}
	}
	return dl, dep
}
