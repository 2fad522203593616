package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/source"
	"github.com/wagg/wagg/plugins"
)

// Options configure a Catalog.
type Options struct {
	Brokers []string
	Admin   *kadm.Client
	// Topic is the catalog's topic, created (compacted, one partition) when
	// missing. Hosts that share it are one cluster.
	Topic string
	// MaxPluginSize is the largest plugin it must carry: the topic's
	// max.message.bytes is set above it.
	MaxPluginSize int
	// Plugin stores a plugin record on this host (the local registry). It
	// is called in log order, before any later record is applied; an error
	// is logged and the record skipped (say, other bytes under a
	// name@version that an earlier record took).
	Plugin func(ctx context.Context, p Plugin) error
	// Changed is called, from the reading goroutine, with the name of each
	// deployment that a record of another process (another host, or this
	// host before a restart while it follows) changed. It must not block
	// on this Catalog's Put calls.
	Changed func(deployment string)
	Log     *slog.Logger
}

// Catalog is this host's view of the shared topic, and how it writes to it.
type Catalog struct {
	o    Options
	cl   *kgo.Client
	self []byte // this process, in the header of what it writes

	mu      sync.Mutex
	st      *state
	applied int64 // the next offset to apply
	moved   chan struct{}
}

// Open creates the topic when missing (raising its message size when a
// larger plugin limit needs it) and connects. Load reads it.
func Open(ctx context.Context, o Options) (*Catalog, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	maxMsg := o.MaxPluginSize + 1<<20
	size := strconv.Itoa(maxMsg)
	compact := "compact"
	if err := source.EnsureTopic(ctx, o.Admin, o.Topic, 1, map[string]*string{"cleanup.policy": &compact, "max.message.bytes": &size}); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	// A topic made by a host with a smaller plugin limit: raise it.
	if _, err := o.Admin.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &size}}, o.Topic); err != nil {
		return nil, fmt.Errorf("catalog: topic %s: set max.message.bytes: %w", o.Topic, err)
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(o.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{o.Topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.DefaultProduceTopic(o.Topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchMaxBytes(int32(maxMsg)),
		kgo.FetchMaxPartitionBytes(int32(maxMsg)),
		kgo.FetchMaxBytes(int32(maxMsg)),
		kgo.ProducerLinger(0),
	)
	if err != nil {
		return nil, fmt.Errorf("catalog: kafka client: %w", err)
	}
	var self [8]byte
	rand.Read(self[:])
	return &Catalog{o: o, cl: cl, self: []byte(hex.EncodeToString(self[:])), st: newState(), moved: make(chan struct{})}, nil
}

// Load reads the topic up to its end as it is now, so that the host starts
// with what the cluster holds. It does not call Changed.
func (c *Catalog) Load(ctx context.Context) error {
	end, err := c.end(ctx)
	if err != nil {
		return err
	}
	for c.next() < end {
		if err := c.poll(ctx, false); err != nil {
			return err
		}
	}
	return nil
}

// end is the topic's end offset, waiting (up to a minute) while a topic
// just created is not known to every broker yet.
func (c *Catalog) end(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		ends, err := c.o.Admin.ListEndOffsets(ctx, c.o.Topic)
		if err == nil {
			end, ok := ends.Lookup(c.o.Topic, 0)
			switch {
			case !ok:
				err = errors.New("partition 0 not known yet")
			case end.Err != nil:
				err = end.Err
			default:
				return end.Offset, nil
			}
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("catalog: end of %s: %w", c.o.Topic, err)
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

// Run follows the topic until ctx ends, calling Changed as records arrive.
func (c *Catalog) Run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := c.poll(ctx, true); err != nil && ctx.Err() == nil {
			c.o.Log.Warn("catalog: reading", "topic", c.o.Topic, "err", err)
			sleep(ctx, time.Second)
		}
	}
}

// Close closes the client.
func (c *Catalog) Close() { c.cl.Close() }

func (c *Catalog) poll(ctx context.Context, notify bool) error {
	fs := c.cl.PollFetches(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ferr error
	fs.EachError(func(_ string, _ int32, err error) { ferr = err })
	var changed []string
	next := int64(-1)
	fs.EachRecord(func(r *kgo.Record) {
		c.mu.Lock()
		p, err := c.st.apply(r.Offset, string(r.Key), r.Value, r.Timestamp)
		c.mu.Unlock()
		switch {
		case err != nil:
			c.o.Log.Error("catalog: record skipped", "offset", r.Offset, "err", err)
		case p != nil:
			if err := c.o.Plugin(ctx, *p); err != nil {
				c.o.Log.Error("catalog: plugin not stored on this host", "plugin", p.Name+"@"+p.Version, "sha256", p.SHA256, "err", err)
			}
		case !c.mine(r):
			changed = append(changed, deploymentOf(string(r.Key)))
		}
		next = r.Offset + 1
	})
	if notify && c.o.Changed != nil {
		for _, name := range changed {
			c.o.Changed(name)
		}
	}
	c.mu.Lock()
	if next > c.applied {
		c.applied = next
	}
	close(c.moved)
	c.moved = make(chan struct{})
	c.mu.Unlock()
	return ferr
}

func (c *Catalog) mine(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == "writer" {
			return string(h.Value) == string(c.self)
		}
	}
	return false
}

func (c *Catalog) next() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applied
}

// Deployments is every deployment the catalog holds, by name.
func (c *Catalog) Deployments() []Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.entries()
}

// Deployment is the named deployment, if the catalog holds it.
func (c *Catalog) Deployment(name string) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.st.deployments[name]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// PutPlugin writes a plugin and waits until this host has applied it.
func (c *Catalog) PutPlugin(ctx context.Context, name, version, sha string, wasm []byte) error {
	_, err := c.put(ctx, pluginKey(name, version, sha), wasm)
	return err
}

// DeletePlugin writes the tombstone of a plugin and waits until this host
// has applied it (deleted its copy).
func (c *Catalog) DeletePlugin(ctx context.Context, name, version, sha string) error {
	_, err := c.put(ctx, pluginKey(name, version, sha), nil)
	return err
}

// PutDeployment writes a spec (a new revision, clearing any failure) and
// waits until this host has applied it. It returns the revision.
func (c *Catalog) PutDeployment(ctx context.Context, d plugins.Deployment) (int64, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return 0, err
	}
	return c.put(ctx, prefixDeployment+d.Name, b)
}

// DeleteDeployment writes the tombstones of a deployment and its failure
// and waits until this host has applied them.
func (c *Catalog) DeleteDeployment(ctx context.Context, name string) error {
	if _, err := c.put(ctx, prefixFailed+name, nil); err != nil {
		return err
	}
	_, err := c.put(ctx, prefixDeployment+name, nil)
	return err
}

// PutFailure records that revision gen of a deployment failed.
func (c *Catalog) PutFailure(ctx context.Context, name string, f Failure) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	_, err = c.put(ctx, prefixFailed+name, b)
	return err
}

// CatchUp waits until this host has applied every record the topic holds
// now: what another host wrote before, this host acts on (a deploy on b of
// a plugin just pushed to a).
func (c *Catalog) CatchUp(ctx context.Context) error {
	end, err := c.end(ctx)
	if err != nil {
		return err
	}
	return c.wait(ctx, end)
}

// wait waits until the records before offset end are applied.
func (c *Catalog) wait(ctx context.Context, end int64) error {
	for {
		c.mu.Lock()
		applied, moved := c.applied, c.moved
		c.mu.Unlock()
		if applied >= end {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("catalog: waiting for offset %d of %s: %w", end, c.o.Topic, ctx.Err())
		}
	}
}

// put writes one record and waits until the reading goroutine has applied
// it: what a host's API call wrote, that host's catalog shows.
func (c *Catalog) put(ctx context.Context, key string, value []byte) (int64, error) {
	r := &kgo.Record{Key: []byte(key), Value: value, Partition: 0, Headers: []kgo.RecordHeader{{Key: "writer", Value: c.self}}}
	if err := c.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		return 0, fmt.Errorf("catalog: write %s: %w", key, err)
	}
	if err := c.wait(ctx, r.Offset+1); err != nil {
		return 0, err
	}
	return r.Offset, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
