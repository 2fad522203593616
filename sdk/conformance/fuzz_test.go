package conformance

import (
	"context"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
)

// FuzzGuestDecoders feeds arbitrary bytes to every SDK's batch and snapshot
// decoders inside the guest: each must answer a status, never trap (a trap
// would discard the instance and park the partition), and a refused
// snapshot leaves the state empty. The uniquevoters builds, whose
// snapshots hold sketches, must also agree on which snapshots they accept.
func FuzzGuestDecoders(f *testing.F) {
	for _, v := range loadVectors(&testing.T{}) {
		for _, s := range v.Steps {
			for _, h := range []string{s.ProcessHex, s.RestoreHex, s.SnapshotHex} {
				if b, err := hex.DecodeString(h); err == nil && len(b) > 0 {
					f.Add(b)
				}
			}
		}
	}
	ctx := context.Background()
	rt, err := sandbox.New(ctx, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer rt.Close(ctx)
	windows := map[string][]abi.Window{
		"votes":        {{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "total", Kind: abi.Global}},
		"uniquevoters": {{Name: "five_minutes", Kind: abi.Hopping, SizeMs: 300_000, SlideMs: 60_000}},
	}
	insts := map[string]map[string]*sandbox.Instance{}
	for _, agg := range []string{"votes", "uniquevoters"} {
		insts[agg] = map[string]*sandbox.Instance{}
		for _, sdk := range sdks {
			m, err := rt.Compile(ctx, aggregators[agg][sdk](f))
			if err != nil {
				f.Fatal(err)
			}
			if insts[agg][sdk], err = m.Instantiate(ctx, abi.Config{Windows: windows[agg]}); err != nil {
				f.Fatal(err)
			}
		}
	}
	status := func(t *testing.T, sdk, call string, err error) abi.Code {
		var g *sandbox.GuestError
		if err != nil && (!errors.As(err, &g) || g.Code == abi.OK) {
			t.Fatalf("%s %s trapped: %v", sdk, call, err)
		}
		if err != nil {
			return g.Code
		}
		return abi.OK
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, agg := range []string{"votes", "uniquevoters"} {
			codes := map[abi.Code][]string{}
			for _, sdk := range sdks {
				inst := insts[agg][sdk]
				status(t, sdk, "process", inst.Process(ctx, b))
				code := status(t, sdk, "restore", inst.Restore(ctx, b))
				codes[code] = append(codes[code], sdk)
				if code != abi.OK {
					rows, err := inst.Flush(ctx, 0, nil)
					if err != nil || len(rows) != 0 {
						t.Fatalf("%s %s: after a refused snapshot, flush gave %d rows, %v", agg, sdk, len(rows), err)
					}
				}
			}
			if agg == "uniquevoters" && len(codes) > 1 {
				t.Fatalf("uniquevoters: the SDKs disagree on a snapshot: %v", codes)
			}
		}
	})
}
