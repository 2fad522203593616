package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/wagg/wagg/abi"
)

// guestLog forwards guest stdout and stderr to the host log, line by line
// (a line longer than maxLine in pieces of maxLine bytes),
// at most burst lines per second, so a chatty or hostile guest cannot flood
// the host's log. Dropped lines are counted and reported.
//
// It also counts the lines of the current call: past maxPerCall the writes
// fail (the guest sees an I/O error) and the call itself fails when it
// returns, since a guest that writes that much is broken or hostile.
type guestLog struct {
	log     *slog.Logger
	mu      sync.Mutex
	partial []byte
	window  time.Time
	lines   int
	dropped int

	maxPerCall int
	inCall     int
}

const burst = 20

var errLogLimit = errors.New("too many log lines in one call")

func newGuestLog(l *slog.Logger, maxPerCall int) *guestLog {
	return &guestLog{log: l, maxPerCall: maxPerCall}
}

// begin starts counting the lines of a call.
func (g *guestLog) begin() {
	g.mu.Lock()
	g.inCall = 0
	g.mu.Unlock()
}

// end reports a call that wrote more lines than allowed.
func (g *guestLog) end(export string) error {
	g.mu.Lock()
	n := g.inCall
	g.mu.Unlock()
	if n > g.maxPerCall {
		return &GuestError{Export: export, Code: abi.ErrOutputLimit,
			Message: fmt.Sprintf("wrote more than %d lines to stdout/stderr in one call (sandbox.max_log_lines)", g.maxPerCall)}
	}
	return nil
}

// Write takes p a line's length at a time, so that one write of a guest's
// whole memory costs no copy of it: past the call's line limit the rest is
// not read.
func (g *guestLog) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for n < len(p) {
		if g.inCall > g.maxPerCall {
			return n, errLogLimit
		}
		chunk := p[n:min(len(p), n+maxLine)]
		g.partial = append(g.partial, chunk...)
		n += len(chunk)
		g.emitLines()
	}
	return n, nil
}

// emitLines emits the whole lines of partial, and a line's first maxLine bytes
// when it is longer.
func (g *guestLog) emitLines() {
	for {
		i, next := bytes.IndexByte(g.partial, '\n'), 0
		switch {
		case i >= 0 && i <= maxLine:
			next = i + 1 // past the newline
		case len(g.partial) > maxLine:
			i, next = maxLine, maxLine // a long line goes on in the next
		default:
			if cap(g.partial) > 4*maxLine {
				// what a long write left: not worth its buffer
				g.partial = append([]byte(nil), g.partial...)
			}
			return
		}
		g.emit(string(g.partial[:i]))
		g.partial = g.partial[next:]
	}
}

// maxLine is the longest line the log passes on in one piece.
const maxLine = 4096

func (g *guestLog) emit(line string) {
	g.inCall++
	if g.inCall > g.maxPerCall {
		return
	}
	now := time.Now()
	if now.Sub(g.window) >= time.Second {
		if g.dropped > 0 {
			g.log.Warn("plugin output dropped", "lines", g.dropped)
		}
		g.window, g.lines, g.dropped = now, 0, 0
	}
	if g.lines >= burst {
		g.dropped++
		return
	}
	g.lines++
	g.log.Info("plugin", "out", line)
}
