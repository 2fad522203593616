package hub

import (
	"slices"
	"testing"

	"github.com/wagg/wagg/abi"
)

// A partition restored from its checkpoint on another host replays values
// older than those already shown: the hub keeps the newer ones.
func TestHub_ReplayedOlderVersionsDoNotTakeAValueBack(t *testing.T) {
	h, url := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	pub := func(p int32, version int64, votes int64) {
		t.Helper()
		if err := h.PublishAt("votes", p, version, []abi.Row{row(total, 0, 1, "a", votes, 5, 5, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	pub(0, 100, 10) // the old owner, ahead of its last checkpoint
	pub(1, 7, 1)
	pub(0, 60, 6) // the new owner replays from the checkpoint at 60
	pub(0, 90, 9)
	c := dial(t, url, Subscribe{Aggregator: "votes"})
	var v View
	follow(t, c, &v, (*View).Live)
	if got, want := compact(v.Rows()), []string{"total 0 1/a 11 5 5 0"}; !slices.Equal(got, want) {
		t.Fatalf("rows %q, want %q (the replay took the value back)", got, want)
	}
	seq := v.Seq
	pub(0, 100, 10) // caught up: the same value again makes no delta
	pub(0, 120, 12)
	follow(t, c, &v, func(v *View) bool { return v.Seq > seq })
	if got, want := compact(v.Rows()), []string{"total 0 1/a 13 5 5 0"}; !slices.Equal(got, want) || v.Seq != seq+1 {
		t.Fatalf("rows %q at seq %d, want %q at %d", got, v.Seq, want, seq+1)
	}
}
