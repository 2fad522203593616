// Package checkpoint stores, per deployment and partition, where processing
// stands: the next Kafka offset, the watermark and the plugin's state
// snapshot. It is written after the rows it covers and before the Kafka
// offset commit, and read on assignment to restore the plugin and resume
// from the offset: together with idempotent rows this makes results exact
// across crashes. It is a ClickHouse table, so any host of a group can pick
// up any partition.
package checkpoint

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Checkpoint is the progress of one partition of one deployment.
type Checkpoint struct {
	Deployment string
	Topic      string
	Partition  int32
	NextOffset int64
	Watermark  int64
	Snapshot   []byte
	Plugin     string // sha256 of the plugin that took the snapshot
	// StateVersion is the version of the snapshot's meaning the plugin
	// declared (abi.Schema.StateVersion); rows from before it was kept read
	// as 1.
	StateVersion int
	// RelayTopic and RelayOffset say where the deployment's relay topic
	// (host/relay) is to be read from to follow the partition on from
	// this checkpoint: RelayTopic names the topic's incarnation (its Kafka
	// ID and partition count), RelayOffset is an offset of its partition
	// that every row emitted after this checkpoint lands at or after.
	// Empty when unknown.
	RelayTopic  string
	RelayOffset int64
}

// Store reads and writes checkpoints in a ClickHouse table.
type Store struct {
	conn  driver.Conn
	table string
	clock versionClock
}

// Table is the checkpoint table's name.
const Table = "_wagg_checkpoints"

// tableDDL creates the checkpoint table: one row per (deployment, topic,
// partition) once merged, the one of the highest version. Each row is a
// granule of its own (index_granularity 1): the table holds few rows, and
// in a granule of the default 8,192 a Load read the snapshots of every
// deployment to find its own, so one plugin's 64 MiB snapshots made every
// other deployment's partitions take seconds each to restore.
func tableDDL(table string) string {
	return "CREATE TABLE IF NOT EXISTS " + table + ` (
		deployment String, topic String, source_partition UInt32,
		next_offset Int64, watermark Int64, snapshot String, plugin_sha256 String,
		version UInt64, written_at DateTime DEFAULT now(), state_version UInt32 DEFAULT 1,
		relay_topic String DEFAULT '', relay_offset Int64 DEFAULT -1
	) ENGINE = ReplacingMergeTree(version) ORDER BY (deployment, topic, source_partition)
	SETTINGS index_granularity = 1`
}

// saveColumns are the columns Save writes, in the order of values.
const saveColumns = "deployment, topic, source_partition, next_offset, watermark, snapshot, plugin_sha256, version, state_version, relay_topic, relay_offset"

// values is c as the values of saveColumns, written at version. A state
// version below 1 is written as 1, what every plugin was before plugins
// declared one.
func (c Checkpoint) values(version uint64) []any {
	return []any{c.Deployment, c.Topic, uint32(c.Partition), c.NextOffset, c.Watermark, string(c.Snapshot), c.Plugin, version, uint32(max(c.StateVersion, 1)), c.RelayTopic, c.RelayOffset}
}

// Open creates the table when missing.
func Open(ctx context.Context, conn driver.Conn, db string) (*Store, error) {
	s := &Store{conn: conn, table: "`" + db + "`." + Table}
	if err := conn.Exec(ctx, tableDDL(s.table)); err != nil {
		return nil, fmt.Errorf("checkpoint: create table: %w", err)
	}
	// A table made before a column was kept gets it; its rows read as the
	// default. (ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS.)
	for _, c := range []struct{ name, ddl string }{
		{"state_version", "state_version UInt32 DEFAULT 1"}, // rows from before: version 1, what every plugin was then
		{"relay_topic", "relay_topic String DEFAULT ''"},    // rows from before: no relay position
		{"relay_offset", "relay_offset Int64 DEFAULT -1"},
	} {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?", db, Table, c.name).Scan(&n); err != nil {
			return nil, fmt.Errorf("checkpoint: columns: %w", err)
		}
		if n == 0 {
			if err := conn.Exec(ctx, "ALTER TABLE "+s.table+" ADD COLUMN "+c.ddl); err != nil {
				return nil, fmt.Errorf("checkpoint: add %s: %w", c.name, err)
			}
		}
	}
	return s, nil
}

// ErrNone means the partition has no checkpoint yet.
var ErrNone = errors.New("checkpoint: none")

// Load returns the latest checkpoint of a partition, or ErrNone.
func (s *Store) Load(ctx context.Context, deployment, topic string, partition int32) (Checkpoint, error) {
	// The row of the highest version, the one FINAL would keep. The key in
	// PREWHERE, and a granule per row, make ClickHouse read the snapshot
	// of that partition's rows only; with FINAL, or the key in WHERE, it
	// read its neighbours' too (all of a part's, when the part holds one
	// row, as a save's part does before merges).
	row := s.conn.QueryRow(ctx, "SELECT "+loadColumns+" FROM "+s.table+
		" PREWHERE deployment = ? AND topic = ? AND source_partition = ? ORDER BY version DESC LIMIT 1", deployment, topic, uint32(partition))
	var l loaded
	if err := row.Scan(l.dest()...); err != nil {
		c := Checkpoint{Deployment: deployment, Topic: topic, Partition: partition}
		if errors.Is(err, sql.ErrNoRows) {
			return c, ErrNone
		}
		return c, fmt.Errorf("checkpoint: load %s/%s/%d: %w", deployment, topic, partition, err)
	}
	// The host that wrote it may run a clock ahead of this one's: the next
	// saves must still win over it.
	s.clock.observe(l.version)
	return l.checkpoint(deployment, topic, partition), nil
}

// loadColumns are the columns Load reads, in the order of loaded.dest.
const loadColumns = "next_offset, watermark, snapshot, plugin_sha256, state_version, version"

// loaded is a checkpoint row as Load scans it.
type loaded struct {
	next, watermark  int64
	snapshot, plugin string
	stateVersion     uint32
	version          uint64
}

func (l *loaded) dest() []any {
	return []any{&l.next, &l.watermark, &l.snapshot, &l.plugin, &l.stateVersion, &l.version}
}

func (l *loaded) checkpoint(deployment, topic string, partition int32) Checkpoint {
	return Checkpoint{
		Deployment: deployment, Topic: topic, Partition: partition,
		NextOffset: l.next, Watermark: l.watermark, Snapshot: []byte(l.snapshot), Plugin: l.plugin,
		StateVersion: int(l.stateVersion),
	}
}

// Progress returns the latest checkpoint of every partition of a
// deployment on topic that has one, without the snapshots.
func (s *Store) Progress(ctx context.Context, deployment, topic string) ([]Checkpoint, error) {
	rows, err := s.conn.Query(ctx, "SELECT source_partition, next_offset, watermark, relay_topic, relay_offset FROM "+s.table+
		" FINAL WHERE deployment = ? AND topic = ?", deployment, topic)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: progress of %s/%s: %w", deployment, topic, err)
	}
	defer rows.Close()
	var out []Checkpoint
	for rows.Next() {
		c := Checkpoint{Deployment: deployment, Topic: topic}
		var p uint32
		if err := rows.Scan(&p, &c.NextOffset, &c.Watermark, &c.RelayTopic, &c.RelayOffset); err != nil {
			return nil, fmt.Errorf("checkpoint: progress of %s/%s: %w", deployment, topic, err)
		}
		c.Partition = int32(p)
		out = append(out, c)
	}
	return out, rows.Err()
}

// Writer is a plugin and state version that wrote checkpoints of a
// deployment, and how many partitions' latest checkpoints it wrote.
type Writer struct {
	Plugin       string // sha256
	StateVersion int
	Partitions   int
}

// Topics returns the topics a deployment's checkpoints are of.
func (s *Store) Topics(ctx context.Context, deployment string) ([]string, error) {
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT topic FROM "+s.table+" WHERE deployment = ? ORDER BY topic", deployment)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: topics of %s: %w", deployment, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("checkpoint: topics of %s: %w", deployment, err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Writers returns who wrote the latest checkpoint of each partition of a
// deployment on topic; none for a deployment that never checkpointed.
func (s *Store) Writers(ctx context.Context, deployment, topic string) ([]Writer, error) {
	rows, err := s.conn.Query(ctx, "SELECT plugin_sha256, state_version, count() FROM "+s.table+
		" FINAL WHERE deployment = ? AND topic = ? GROUP BY plugin_sha256, state_version ORDER BY plugin_sha256, state_version", deployment, topic)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: writers of %s/%s: %w", deployment, topic, err)
	}
	defer rows.Close()
	var out []Writer
	for rows.Next() {
		var w Writer
		var sv uint32
		var n uint64
		if err := rows.Scan(&w.Plugin, &sv, &n); err != nil {
			return nil, fmt.Errorf("checkpoint: writers of %s/%s: %w", deployment, topic, err)
		}
		w.StateVersion, w.Partitions = int(sv), int(n)
		out = append(out, w)
	}
	return out, rows.Err()
}

// Save writes a checkpoint. Versions increase with the wall clock, never
// repeat within a process and pass every version Load has read, so the
// latest write wins, also over a checkpoint that a host whose clock runs
// ahead wrote before this one took the partition over.
func (s *Store) Save(ctx context.Context, c Checkpoint) error {
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.table+" ("+saveColumns+")")
	if err != nil {
		return fmt.Errorf("checkpoint: prepare: %w", err)
	}
	defer b.Abort()
	if err := b.Append(c.values(s.clock.next())...); err != nil {
		return fmt.Errorf("checkpoint: append: %w", err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("checkpoint: save %s/%s/%d: %w", c.Deployment, c.Topic, c.Partition, err)
	}
	return nil
}

// versionClock numbers the checkpoints of a process: the wall clock in
// nanoseconds, or one more than the last number (or the highest observed)
// when the clock has not moved past it, so that the later of two saves
// always wins.
type versionClock struct {
	last atomic.Int64
	now  func() time.Time // time.Now when nil
}

// observe makes every later number exceed v, a version another process
// wrote.
func (c *versionClock) observe(v uint64) {
	for {
		old := c.last.Load()
		if int64(v) <= old || c.last.CompareAndSwap(old, int64(v)) {
			return
		}
	}
}

func (c *versionClock) next() uint64 {
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	for {
		old := c.last.Load()
		v := max(now().UnixNano(), old+1)
		if c.last.CompareAndSwap(old, v) {
			return uint64(v)
		}
	}
}
