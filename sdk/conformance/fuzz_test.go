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
// snapshot leaves the state empty. The snapshot decoders run as they
// restore their own snapshots (votes; uniquevoters, whose snapshots hold
// sketches) and as they migrate those of an older build (tenths; voters2,
// whose old and new groups hold sketches, with migrate_from). The builds
// with sketches must also agree on which snapshots they accept.
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
	v1 := func(input []abi.Field, metrics ...abi.Metric) *abi.Schema {
		return &abi.Schema{ABI: abi.Version, Input: input, Keys: []abi.Column{{Name: "poll_id", Type: abi.Int64}}, Metrics: metrics}
	}
	polls := []abi.Window{{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "total", Kind: abi.Global}}
	type set struct {
		name, agg string
		cfg       abi.Config
		agree     bool
		insts     map[string]*sandbox.Instance
	}
	sets := []*set{
		{name: "votes", agg: "votes", cfg: abi.Config{Windows: polls}},
		{name: "uniquevoters", agg: "uniquevoters", agree: true,
			cfg: abi.Config{Windows: []abi.Window{{Name: "five_minutes", Kind: abi.Hopping, SizeMs: 300_000, SlideMs: 60_000}}}},
		{name: "tenths migrating", agg: "tenths", cfg: abi.Config{Windows: polls,
			MigrateFrom: v1([]abi.Field{{Name: "poll_id", Type: abi.Int64}}, abi.Metric{Name: "votes", Kind: abi.Count, Type: abi.Int64})}},
		{name: "voters2 migrating", agg: "voters2", agree: true, cfg: abi.Config{Windows: polls,
			MigrateFrom: v1([]abi.Field{{Name: "poll_id", Type: abi.Int64}, {Name: "user_id", Type: abi.String}},
				abi.Metric{Name: "voters", Kind: abi.Distinct, Type: abi.Int64}, abi.Metric{Name: "ballots", Kind: abi.Count, Type: abi.Int64},
				abi.Metric{Name: "regions", Kind: abi.Distinct, Type: abi.Int64})}},
	}
	for _, st := range sets {
		st.insts = map[string]*sandbox.Instance{}
		for _, sdk := range sdks {
			m, err := rt.Compile(ctx, aggregators[st.agg][sdk](f))
			if err != nil {
				f.Fatal(err)
			}
			if st.insts[sdk], err = m.Instantiate(ctx, st.cfg); err != nil {
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
		for _, st := range sets {
			codes := map[abi.Code][]string{}
			for _, sdk := range sdks {
				inst := st.insts[sdk]
				status(t, sdk, "process", inst.Process(ctx, b))
				code := status(t, sdk, "restore", inst.Restore(ctx, b))
				codes[code] = append(codes[code], sdk)
				if code != abi.OK {
					rows, err := inst.Flush(ctx, 0, nil)
					if err != nil || len(rows) != 0 {
						t.Fatalf("%s %s: after a refused snapshot, flush gave %d rows, %v", st.name, sdk, len(rows), err)
					}
				}
			}
			if st.agree && len(codes) > 1 {
				t.Fatalf("%s: the SDKs disagree on a snapshot: %v", st.name, codes)
			}
		}
	})
}
