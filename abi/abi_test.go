package abi_test

import (
	"math"
	"testing"

	"github.com/wagg/wagg/abi"
)

func TestPack_UnpackRoundTrips(t *testing.T) {
	for _, c := range []struct{ ptr, n uint32 }{
		{0, 0}, {8, 0}, {0, 16}, {1 << 16, 1234}, {math.MaxInt32, math.MaxUint32},
	} {
		v := abi.Pack(c.ptr, c.n)
		if v < 0 {
			t.Fatalf("Pack(%d, %d) = %d, negative", c.ptr, c.n, v)
		}
		ptr, n, code := abi.Unpack(v)
		if ptr != c.ptr || n != c.n || code != abi.OK {
			t.Errorf("Unpack(Pack(%d, %d)) = %d, %d, %v", c.ptr, c.n, ptr, n, code)
		}
	}
}

func TestUnpack_NegativeIsNeverOK(t *testing.T) {
	for _, c := range []struct {
		v    int64
		want abi.Code
	}{
		{int64(abi.ErrBadInput), abi.ErrBadInput},
		{int64(abi.ErrSchema), abi.ErrSchema},
		{int64(abi.ErrNotReady), abi.ErrNotReady},
		{int64(abi.ErrAggregate), abi.ErrAggregate},
		{int64(abi.ErrOutputLimit), abi.ErrOutputLimit},
		{math.MinInt32, math.MinInt32},
		{-1 << 32, math.MinInt32}, // low 32 bits zero: must not read as OK
		{math.MinInt64, math.MinInt32},
		{abi.Pack(1<<31, 0), math.MinInt32}, // a pointer past 2 GiB
	} {
		ptr, n, code := abi.Unpack(c.v)
		if code != c.want || ptr != 0 || n != 0 {
			t.Errorf("Unpack(%d) = %d, %d, %v; want 0, 0, %v", c.v, ptr, n, code, c.want)
		}
	}
}

func TestCode_String(t *testing.T) {
	for c, want := range map[abi.Code]string{
		abi.OK: "ok", abi.ErrBadInput: "bad input", abi.ErrSchema: "schema mismatch",
		abi.ErrNotReady: "not initialized", abi.ErrAggregate: "aggregator error",
		abi.ErrOutputLimit: "output limit", -99: "code -99",
	} {
		if got := c.String(); got != want {
			t.Errorf("Code(%d).String() = %q, want %q", int32(c), got, want)
		}
	}
}

func TestExports_AreDistinctAndVersioned(t *testing.T) {
	names := []string{abi.VersionExport, abi.InitializeExport, abi.InputExport, abi.InitExport,
		abi.DescribeExport, abi.ProcessExport, abi.FlushExport, abi.SnapshotExport,
		abi.RestoreExport, abi.LastErrorExport}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("export %q listed twice", n)
		}
		seen[n] = true
	}
	if abi.VersionExport != "wagg_abi_version_1" || abi.Version != 1 {
		t.Errorf("VersionExport %q does not match Version %d", abi.VersionExport, abi.Version)
	}
}
