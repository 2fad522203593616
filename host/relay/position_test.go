package relay

import "testing"

func testRelay(ends ...int64) *Relay {
	return &Relay{marks: map[int32][]mark{}, chain: map[int32]link{}, unsent: map[int32]bool{},
		layout: layout{key: "id/2", parts: 2, starts: make([]int64, len(ends)), ends: ends}}
}

// A checkpoint's position is the end listed before the first publish past
// its offset: a publish at its offset after it carries values it holds.
func TestPosition_IsTheFloorBeforeTheFirstPublishPastTheCheckpoint(t *testing.T) {
	r := testRelay(10, 100)
	r.note(0, 5)
	r.layout.ends = []int64{12, 100}
	r.note(0, 5) // the checkpoint's own emit, or one after it with no new record
	r.layout.ends = []int64{13, 100}
	r.note(0, 8) // past the checkpoint at 5
	r.layout.ends = []int64{20, 100}
	r.note(0, 9)
	if key, at := r.position(0, 5); key != "id/2" || at != 13 {
		t.Fatalf("position %s %d, want id/2 13", key, at)
	}
	// Saved again (a retry): the same answer.
	if _, at := r.position(0, 5); at != 13 {
		t.Fatalf("position again %d, want 13", at)
	}
	if _, at := r.position(0, 8); at != 20 {
		t.Fatalf("position at 8: %d, want 20 (the mark of 9)", at)
	}
	// Nothing published past the checkpoint yet: the latest end.
	if _, at := r.position(0, 9); at != 20 {
		t.Fatalf("position at 9: %d, want 20", at)
	}
	if _, at := r.position(2, 0); at != 20 {
		t.Fatalf("partition 2 (relay partition 0) never published: %d, want 20", at)
	}
	if _, at := r.position(1, 0); at != 100 {
		t.Fatalf("partition 1 (relay partition 1): %d, want 100", at)
	}
}

// Past maxMarks, neighbours merge toward the lower floor: positions may
// come earlier, never later.
func TestPosition_MergedMarksNeverComeLater(t *testing.T) {
	r := testRelay(0, 0)
	floorOf := map[int64]int64{}
	for v := int64(1); v <= 3*maxMarks; v++ {
		r.layout.ends[0] = 10 * v
		floorOf[v] = 10 * v
		r.note(0, v)
	}
	if n := len(r.marks[0]); n > maxMarks {
		t.Fatalf("%d marks kept, bound %d", n, maxMarks)
	}
	for _, next := range []int64{0, 1, 7, 500, 2000, 3*maxMarks - 1} {
		_, at := r.position(0, next)
		if exact := floorOf[next+1]; at > exact {
			t.Fatalf("position after %d: %d, later than the exact %d", next, at, exact)
		}
	}
}

// Another incarnation of the topic voids the floors listed in the old one.
func TestPosition_ANewIncarnationVoidsOldFloors(t *testing.T) {
	r := testRelay(500, 500)
	r.note(0, 5)
	r.note(0, 9)
	r.adopt(layout{key: "other/2", parts: 2, starts: []int64{0, 0}, ends: []int64{3, 0}})
	if key, at := r.position(0, 5); key != "other/2" || at != 0 {
		t.Fatalf("position %s %d, want other/2 0", key, at)
	}
}

// Each publish of a partition is numbered and names the version of the
// one before, so that a reader sees one that never reached the topic.
func TestNote_NumbersEachPartitionsPublishes(t *testing.T) {
	r := testRelay(0, 0)
	k, prev := r.note(3, 7)
	if k != 1 || prev.seq != 0 || prev.version != -1 {
		t.Fatalf("first: relay partition %d, prev %+v", k, prev)
	}
	r.note(0, 1)
	if _, prev = r.note(3, 9); prev.seq != 1 || prev.version != 7 {
		t.Fatalf("second: prev %+v, want seq 1 version 7", prev)
	}
}
