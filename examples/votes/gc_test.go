package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/testwasm"
	"github.com/wagg/wagg/sdk/go/wagg"
)

// barriers counts the guest's calls into the Go runtime's write barrier,
// which only runs while a collection is marking.
type barriers struct{ n atomic.Int64 }

func (b *barriers) NewFunctionListener(d api.FunctionDefinition) experimental.FunctionListener {
	if !strings.Contains(d.DebugName(), "gcWriteBarrier") {
		return nil
	}
	return b
}

func (b *barriers) Before(context.Context, api.Module, api.FunctionDefinition, []uint64, experimental.StackIterator) {
	b.n.Add(1)
}
func (b *barriers) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}
func (b *barriers) Abort(context.Context, api.Module, api.FunctionDefinition, error)    {}

// A Go guest's collections must finish between batches. Its goroutine runs
// only inside an export; unless the SDK yields there, the collector's
// background marking never runs, a cycle stays in its mark phase, and
// every pointer write of the hot path goes through the write barrier.
func TestWasm_GoGuestCollectionsFinish(t *testing.T) {
	all, _, _ := makeVotes(1<<18, 100000)
	schema, _ := wagg.Describe()
	enc := abi.NewBatchEncoder(&schema)
	batches := split(all, 4096)
	var wb barriers
	ctx := experimental.WithFunctionListenerFactory(context.Background(), &wb)
	rt, err := sandbox.New(ctx, &sandbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	m, err := rt.Compile(ctx, testwasm.Build(t, "examples/votes"))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := m.Instantiate(ctx, abi.Config{Windows: windows})
	if err != nil {
		t.Fatal(err)
	}
	process := func(bs []*abi.Batch) {
		for _, b := range bs {
			buf, err := enc.Encode(b)
			if err != nil {
				t.Fatal(err)
			}
			if err := inst.Process(ctx, buf); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := inst.Flush(ctx, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	process(batches) // every group exists: from here on nothing grows
	wb.n.Store(0)
	process(batches[:16])
	// Each record writes pointers (its groups' panes) two or three times:
	// with a cycle left marking that is over 100k barrier calls here.
	if n, records := wb.n.Load(), 16*4096; n > int64(records)/100 {
		t.Fatalf("%d write barrier calls for %d records: the guest's collection is stuck marking", n, records)
	}
}
