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
}

// Store reads and writes checkpoints in a ClickHouse table.
type Store struct {
	conn  driver.Conn
	table string
	clock atomic.Int64
}

// Table is the checkpoint table's name.
const Table = "_wagg_checkpoints"

// Open creates the table when missing.
func Open(ctx context.Context, conn driver.Conn, db string) (*Store, error) {
	s := &Store{conn: conn, table: "`" + db + "`." + Table}
	ddl := "CREATE TABLE IF NOT EXISTS " + s.table + ` (
		deployment String, topic String, source_partition UInt32,
		next_offset Int64, watermark Int64, snapshot String, plugin_sha256 String,
		version UInt64, written_at DateTime DEFAULT now()
	) ENGINE = ReplacingMergeTree(version) ORDER BY (deployment, topic, source_partition)`
	if err := conn.Exec(ctx, ddl); err != nil {
		return nil, fmt.Errorf("checkpoint: create table: %w", err)
	}
	return s, nil
}

// ErrNone means the partition has no checkpoint yet.
var ErrNone = errors.New("checkpoint: none")

// Load returns the latest checkpoint of a partition, or ErrNone.
func (s *Store) Load(ctx context.Context, deployment, topic string, partition int32) (Checkpoint, error) {
	c := Checkpoint{Deployment: deployment, Topic: topic, Partition: partition}
	row := s.conn.QueryRow(ctx, "SELECT next_offset, watermark, snapshot, plugin_sha256 FROM "+s.table+
		" FINAL WHERE deployment = ? AND topic = ? AND source_partition = ?", deployment, topic, uint32(partition))
	var snap string
	if err := row.Scan(&c.NextOffset, &c.Watermark, &snap, &c.Plugin); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return c, ErrNone
		}
		return c, fmt.Errorf("checkpoint: load %s/%s/%d: %w", deployment, topic, partition, err)
	}
	c.Snapshot = []byte(snap)
	return c, nil
}

// Save writes a checkpoint. Versions increase with the wall clock and never
// repeat within a process, so the latest write wins.
func (s *Store) Save(ctx context.Context, c Checkpoint) error {
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.table+
		" (deployment, topic, source_partition, next_offset, watermark, snapshot, plugin_sha256, version)")
	if err != nil {
		return fmt.Errorf("checkpoint: prepare: %w", err)
	}
	defer b.Abort()
	if err := b.Append(c.Deployment, c.Topic, uint32(c.Partition), c.NextOffset, c.Watermark, string(c.Snapshot), c.Plugin, s.version()); err != nil {
		return fmt.Errorf("checkpoint: append: %w", err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("checkpoint: save %s/%s/%d: %w", c.Deployment, c.Topic, c.Partition, err)
	}
	return nil
}

func (s *Store) version() uint64 {
	for {
		old := s.clock.Load()
		v := max(time.Now().UnixNano(), old+1)
		if s.clock.CompareAndSwap(old, v) {
			return uint64(v)
		}
	}
}
