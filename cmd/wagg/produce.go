package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/source"
	"github.com/wagg/wagg/internal/gen"
)

func produce(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("produce", flag.ContinueOnError)
	brokers := fs.String("kafka", "127.0.0.1:9092", "comma-separated Kafka brokers")
	topic := fs.String("topic", "votes", "topic to write (created when missing)")
	partitions := fs.Int("partitions", 12, "partitions when creating the topic")
	count := fs.Int("count", 0, "votes to write, then stop (0: until interrupted)")
	rate := fs.Int("rate", 1000, "votes per second (0: as fast as possible)")
	polls := fs.Int("polls", 10000, "polls (Zipf-distributed)")
	choices := fs.Int("options", 8, "options per poll")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "random seed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.DefaultProduceTopic(*topic),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := source.EnsureTopic(ctx, kadm.NewClient(cl), *topic, int32(*partitions), nil); err != nil {
		return err
	}
	g := gen.New(gen.Options{Seed: *seed, Polls: *polls, Choices: *choices})
	start := time.Now()
	var sent int64
	var failed atomic.Int64
	errs := make(chan error, 1)
	report := time.NewTicker(5 * time.Second)
	defer report.Stop()
	for i := 0; *count == 0 || i < *count; i++ {
		if *rate > 0 {
			due := start.Add(time.Duration(i) * time.Second / time.Duration(*rate))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			}
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case <-report.C:
			fmt.Printf("produced %d votes (%.0f/s)\n", sent, float64(sent)/time.Since(start).Seconds())
		default:
		}
		now := time.Now()
		v := g.Next(now.UnixMilli())
		rec := &kgo.Record{Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: time.UnixMilli(v.TS)}
		cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
				select {
				case errs <- err:
				default:
				}
			}
		})
		sent++
	}
	if err := cl.Flush(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	select {
	case err := <-errs:
		return fmt.Errorf("%d of %d votes not written: %w", failed.Load(), sent, err)
	default:
	}
	fmt.Printf("produced %d votes to %s in %s\n", sent, *topic, time.Since(start).Round(time.Millisecond))
	return nil
}
