package relay

import (
	"log/slog"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
)

// published records what the follower hands its hub.
type published struct{ versions []int64 }

func (h *published) PublishAt(_ string, _ int32, version int64, _ []abi.Row) error {
	h.versions = append(h.versions, version)
	return nil
}

var testSchema = &abi.Schema{ABI: abi.Version, Keys: []abi.Column{{Name: "k", Type: abi.String}}, Metrics: []abi.Metric{{Name: "n", Kind: abi.Count, Type: abi.Int64}}}

func testFollower(h Hub) *follower {
	r := &Relay{o: Options{Generation: "g", Deployment: "d", Schema: testSchema, Windows: []abi.Window{{Name: "total", Kind: abi.Global}}, Hub: h, Log: slog.New(slog.DiscardHandler)}, self: "me"}
	f := &follower{r: r, layout: "id/1", parts: 1, seen: []int64{100}, src: map[int32]*part{}, chain: map[chainKey]int64{}}
	f.src[0] = &part{from: 100, min: 50, tried: "cp"}
	return f
}

func relayRecord(offset int64, host string, version, seq, prev int64) *kgo.Record {
	w := abi.RowsWriter{}
	w.Append(0, false, 0, abi.AppendKeyString(nil, []byte("a")), []uint64{uint64(version)})
	h := func(k string, v int64) kgo.RecordHeader {
		return kgo.RecordHeader{Key: k, Value: strconv.AppendInt(nil, v, 10)}
	}
	return &kgo.Record{Partition: 0, Offset: offset, Value: w.Bytes(), Headers: []kgo.RecordHeader{
		h("p", 0), h("v", version), h("s", seq), h("pv", prev), {Key: "g", Value: []byte("g")}, {Key: "h", Value: []byte(host)}}}
}

// A record of a process missing from its numbering parks the partition:
// what follows it is not applied on what the hub holds.
func TestFollower_AMissingRecordOfAProcessParksThePartition(t *testing.T) {
	h := &published{}
	f := testFollower(h)
	f.record(relayRecord(100, "a", 60, 7, 40)) // first seen: the one before is covered by the checkpoint (40 < 50)
	f.record(relayRecord(101, "a", 70, 8, 60))
	f.record(relayRecord(102, "a", 90, 10, 80)) // 9 never reached the topic
	f.record(relayRecord(103, "a", 95, 11, 90))
	if want := []int64{60, 70}; len(h.versions) != 2 || h.versions[0] != want[0] || h.versions[1] != want[1] {
		t.Fatalf("applied versions %v, want %v", h.versions, want)
	}
	if pt := f.src[0]; !pt.parked || pt.tried != "cp" {
		t.Fatalf("partition %+v, want parked waiting for a checkpoint other than cp", *pt)
	}
}

// The first record of a process seen may follow one past the checkpoint
// that this host should have seen: parked too.
func TestFollower_AFirstRecordAfterAnUnseenOnePastTheCheckpointParks(t *testing.T) {
	h := &published{}
	f := testFollower(h)
	f.record(relayRecord(100, "b", 80, 3, 70)) // the one before, at 70 > 50, is not in the topic
	if len(h.versions) != 0 || !f.src[0].parked {
		t.Fatalf("applied %v, parked %v; want nothing applied, parked", h.versions, f.src[0].parked)
	}
}

// Offsets missing from a relay partition park its partitions; records of
// this process, older versions and offsets before a partition's position
// are not applied.
func TestFollower_OffsetsMissingParkAndOwnOrOldRecordsAreSkipped(t *testing.T) {
	h := &published{}
	f := testFollower(h)
	f.record(relayRecord(100, "me", 60, 1, -1)) // ours: in the hub already
	f.record(relayRecord(101, "a", 40, 1, -1))  // older than the checkpoint
	f.record(relayRecord(102, "a", 55, 2, 40))
	if len(h.versions) != 1 || h.versions[0] != 55 {
		t.Fatalf("applied %v, want [55]", h.versions)
	}
	if lost := f.record(relayRecord(105, "a", 70, 3, 55)); !lost || !f.src[0].parked {
		t.Fatalf("offsets 103-104 missing: lost %v, parked %v", lost, f.src[0].parked)
	}
}
