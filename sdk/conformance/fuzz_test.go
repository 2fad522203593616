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
// snapshot leaves the state empty. The snapshot decoders run twice: as
// they restore their own snapshots (votes), and as they migrate those of an
// older build (tenths, with migrate_from).
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
	windows := []abi.Window{{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "total", Kind: abi.Global}}
	v1 := &abi.Schema{ABI: abi.Version, Input: []abi.Field{{Name: "poll_id", Type: abi.Int64}},
		Keys: []abi.Column{{Name: "poll_id", Type: abi.Int64}}, Metrics: []abi.Metric{{Name: "votes", Kind: abi.Count, Type: abi.Int64}}}
	insts, migrating := map[string]*sandbox.Instance{}, map[string]*sandbox.Instance{}
	for _, sdk := range sdks {
		m, err := rt.Compile(ctx, aggregators["votes"][sdk](f))
		if err != nil {
			f.Fatal(err)
		}
		if insts[sdk], err = m.Instantiate(ctx, abi.Config{Windows: windows}); err != nil {
			f.Fatal(err)
		}
		if m, err = rt.Compile(ctx, aggregators["tenths"][sdk](f)); err != nil {
			f.Fatal(err)
		}
		if migrating[sdk], err = m.Instantiate(ctx, abi.Config{Windows: windows, MigrateFrom: v1}); err != nil {
			f.Fatal(err)
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
		for _, sdk := range sdks {
			inst := insts[sdk]
			status(t, sdk, "process", inst.Process(ctx, b))
			for _, inst := range []*sandbox.Instance{inst, migrating[sdk]} {
				if status(t, sdk, "restore", inst.Restore(ctx, b)) != abi.OK {
					rows, err := inst.Flush(ctx, 0, nil)
					if err != nil || len(rows) != 0 {
						t.Fatalf("%s: after a refused snapshot, flush gave %d rows, %v", sdk, len(rows), err)
					}
				}
			}
		}
	})
}
