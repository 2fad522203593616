package sandbox

import (
	"errors"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
)

func TestGuestLog_TooManyLinesInOneCallFailTheCall(t *testing.T) {
	g := newGuestLog(slog.New(slog.NewTextHandler(io.Discard, nil)), 10)
	g.begin()
	for range 10 {
		if _, err := g.Write([]byte("line\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.end(abi.ProcessExport); err != nil {
		t.Fatalf("10 lines with a cap of 10: %v", err)
	}
	g.begin()
	var werr error
	for range 100 {
		if _, werr = g.Write([]byte("line\nline\n")); werr != nil {
			break
		}
	}
	if werr == nil {
		t.Fatal("writes past the cap kept succeeding")
	}
	err := g.end(abi.ProcessExport)
	var ge *GuestError
	if !errors.As(err, &ge) || ge.Code != abi.ErrOutputLimit || !strings.Contains(err.Error(), "max_log_lines") {
		t.Fatalf("got %v, want an output-limit *GuestError naming sandbox.max_log_lines", err)
	}
	// One line without a newline, as long as the guest likes, counts as
	// lines of 4 KiB.
	g.begin()
	_, werr = g.Write(make([]byte, 1<<20))
	if g.end(abi.ProcessExport) == nil {
		t.Fatalf("a 1 MiB line passed a cap of 10 lines (write: %v)", werr)
	}
	// A write of a guest's whole memory is read only up to the limit, a
	// line at a time: no copy of it on the heap.
	g.begin()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n, werr := g.Write(make([]byte, 64<<20))
	runtime.ReadMemStats(&after)
	if werr == nil || n > 12*maxLine {
		t.Fatalf("a 64 MiB write: %d bytes taken (%v), want the write stopped past 10 lines", n, werr)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20+1<<20 {
		t.Fatalf("a 64 MiB write allocated %d MiB besides its own 64", (grew-64<<20)>>20)
	}
}

func TestGuestLog_LongLinesAreSplitWithoutLosingBytes(t *testing.T) {
	var out strings.Builder
	g := newGuestLog(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key != "out" {
				return slog.Attr{}
			}
			return a
		},
	})), 10)
	line := strings.Repeat("0123456789", 1000) // 10,000 bytes, three pieces
	// in one write with its newline, and in writes without one
	for _, writes := range [][]string{{line + "\n"}, {line[:5000], line[5000:], "\n"}} {
		out.Reset()
		g.begin()
		for _, w := range writes {
			if _, err := g.Write([]byte(w)); err != nil {
				t.Fatal(err)
			}
		}
		var got strings.Builder
		pieces := strings.Split(strings.TrimSpace(out.String()), "\n")
		for _, l := range pieces {
			got.WriteString(strings.TrimPrefix(l, "out="))
		}
		if len(pieces) != 3 || got.String() != line {
			t.Fatalf("%d writes: %d pieces holding %d bytes of the line's %d, want 3 holding all", len(writes), len(pieces), got.Len(), len(line))
		}
	}
}
