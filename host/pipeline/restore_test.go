package pipeline

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A partition's worker stopped or killed and started again (on this host or
// another) restores its plugin from the checkpoint and reads on from the
// checkpoint's offset: the records after it are counted once, those before
// it not at all.
func TestCheckpoint_RestoreAfterKillReplaysFromOffset(t *testing.T) {
	const first, more = 600, 400
	cases := []struct {
		name string
		// kill stops without a final checkpoint, while ClickHouse is down
		// so no save after the first one lands: the records after it are
		// in the plugin's state only.
		kill bool
		// paced holds every checkpoint after the first back (a snapshot
		// rate of a byte a second): the rows of the records after it are
		// in ClickHouse, ahead of the checkpoint, when the worker is killed.
		paced bool
		// from is where the restarted worker should read on.
		from int64
	}{
		{"killed with records after its last checkpoint", true, false, first},
		{"killed with rows stored past its last checkpoint", true, true, first},
		{"stopped with a final checkpoint", false, false, first + more},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := Spec{MaxBatch: 64}
			if c.paced {
				spec.SnapshotRate = 1
			}
			r := newRig(t, "examples/votes", spec)
			r.start()
			w := want{}
			recs := r.votes(w, first+more)
			r.feed(recs[:first])
			eventually(t, 10*time.Second, "the first records checkpointed", r.counted(w.only(recs[:first]), first))

			if c.kill && !c.paced {
				r.store.set(true, false)
			}
			r.feed(recs[first:])
			if c.paced {
				eventually(t, 10*time.Second, "every record's rows stored, the checkpoint held back", func() error {
					if err := w.diff(r.store.sums(1)); err != nil {
						return err
					}
					if n := r.store.next(0); n != first {
						return fmt.Errorf("a checkpoint at offset %d, want it held back at %d", n, first)
					}
					return nil
				})
			}
			eventually(t, 10*time.Second, "every record emitted live", func() error {
				if v := r.live.version.Load(); v != first+more {
					return fmt.Errorf("live rows as of offset %d", v)
				}
				return nil
			})
			if c.kill {
				r.stop(false)
				if n := r.store.next(0); n != first {
					t.Fatalf("a checkpoint at %d landed while ClickHouse was down", n)
				}
				r.store.set(false, false)
			} else {
				r.stop(true)
			}

			r.start()
			if r.w.next != c.from {
				t.Fatalf("restored at offset %d, want %d", r.w.next, c.from)
			}
			// Kafka hands over what follows the checkpoint (the client drops
			// what comes before the fetch offset in a batch; earlier
			// offsets would mean the log went back:
			// TestWorker_OffsetsGoingBackStopTheDeployment).
			if rest := recs[r.w.next:]; len(rest) > 0 {
				r.feed(rest)
			}
			eventually(t, 10*time.Second, "every record counted once", r.counted(w, first+more))
		})
	}
}

// The negative control of the test above: a worker that resumes a few
// offsets before its checkpoint counts those records twice, and the oracle
// sees it.
func TestCheckpoint_ResumingBeforeTheOffsetCountsTwice(t *testing.T) {
	const n, overlap = 300, 25
	r := newRig(t, "examples/votes", Spec{MaxBatch: 64, UnsafeReplayOverlap: overlap})
	r.start()
	w := want{}
	recs := r.votes(w, n)
	r.feed(recs)
	eventually(t, 10*time.Second, "the records checkpointed", r.counted(w, n))
	r.stop(true)
	r.start()
	if r.w.next != n-overlap {
		t.Fatalf("restored at %d, want %d", r.w.next, n-overlap)
	}
	r.feed(recs[n-overlap:])
	double := want{}
	for k, v := range w {
		double[k] = v
	}
	for _, rec := range recs[n-overlap:] {
		double.addRecord(rec)
	}
	eventually(t, 10*time.Second, "the overlap counted twice", func() error {
		if err := double.diff(r.store.sums(1)); err != nil {
			return err
		}
		if w.diff(r.store.sums(1)) == nil {
			return errors.New("the exact count: the overlap was not replayed")
		}
		return nil
	})
}

// votes makes n votes in order of event time, adding them to w.
func (r *rig) votes(w want, n int) []*kgo.Record {
	base := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC).UnixMilli()
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		poll, opt := i%7+1, options[i%len(options)]
		w.add(poll, opt)
		recs = append(recs, r.vote(poll, opt, base+int64(i)*10))
	}
	return recs
}

// only is the oracle of the given records alone.
func (w want) only(recs []*kgo.Record) want {
	o := want{}
	for _, rec := range recs {
		o.addRecord(rec)
	}
	return o
}

// addRecord counts the vote a record of rig.vote carries.
func (w want) addRecord(rec *kgo.Record) {
	var poll int
	var option string
	if _, err := fmt.Sscanf(string(rec.Value), `{"poll_id":%d,"option":%q}`, &poll, &option); err != nil {
		panic(fmt.Sprintf("not a vote of rig.vote: %s", rec.Value))
	}
	w.add(poll, option)
}
