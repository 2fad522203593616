package main

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/testwasm"
)

// cycles counts the guest's collections started (gcStart calls
// gcResetMarkState once its trigger holds) and finished.
type cycles struct{ started, finished atomic.Int64 }

func (c *cycles) NewFunctionListener(d api.FunctionDefinition) experimental.FunctionListener {
	switch d.DebugName() {
	case ".runtime.gcResetMarkState", ".runtime.gcMarkTermination":
		return c
	}
	return nil
}

func (c *cycles) Before(_ context.Context, _ api.Module, d api.FunctionDefinition, _ []uint64, _ experimental.StackIterator) {
	if d.DebugName() == ".runtime.gcResetMarkState" {
		c.started.Add(1)
	} else {
		c.finished.Add(1)
	}
}
func (c *cycles) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}
func (c *cycles) Abort(context.Context, api.Module, api.FunctionDefinition, error)    {}

// A Go guest's collections must finish between batches. Its goroutine runs
// only inside an export; unless the SDK yields there, the collector's
// background marking never runs, and a collection that no allocation
// drives on stays in its mark phase for good: every pointer write then
// goes through the write barrier (the votes guest of the record-at-a-time
// API ran 30% slower).
func TestWasm_GoGuestCollectionsFinish(t *testing.T) {
	var gc cycles
	ctx := experimental.WithFunctionListenerFactory(context.Background(), &gc)
	rt, err := sandbox.New(ctx, &sandbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	m, err := rt.Compile(ctx, testwasm.Build(t, "internal/testwasm/garbage"))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := m.Instantiate(ctx, abi.Config{Windows: windows})
	if err != nil {
		t.Fatal(err)
	}
	schema := m.Schema
	enc := abi.NewBatchEncoder(&schema)
	process := func(poll int64) {
		b := &abi.Batch{Times: make([]int64, 1024), Columns: []abi.BatchColumn{{Ints: make([]int64, 1024)}}}
		for i := range b.Times {
			b.Times[i], b.Columns[0].Ints[i] = t0, poll+int64(i%100)
		}
		buf, err := enc.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := inst.Process(ctx, buf); err != nil {
			t.Fatal(err)
		}
	}
	process(0) // the groups exist: from here on, only the garbage batch allocates
	process(-1)
	if gc.started.Load() == 0 {
		t.Fatal("the garbage batch started no collection: the test no longer exercises the collector")
	}
	// The collector's worker runs a share of the time at each yield: the
	// open collection finishes some tens of batches later (40 here).
	for range 1000 {
		if gc.started.Load() == gc.finished.Load() {
			return
		}
		process(0)
	}
	t.Fatalf("%d collections started, %d finished after 1000 more batches: the guest's collection is stuck marking", gc.started.Load(), gc.finished.Load())
}
