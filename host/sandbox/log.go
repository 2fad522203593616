package sandbox

import (
	"bytes"
	"log/slog"
	"sync"
	"time"
)

// guestLog forwards guest stdout and stderr to the host log, line by line,
// at most burst lines per second, so a chatty or hostile guest cannot flood
// the host's log. Dropped lines are counted and reported.
type guestLog struct {
	log     *slog.Logger
	mu      sync.Mutex
	partial []byte
	window  time.Time
	lines   int
	dropped int
}

const burst = 20

func newGuestLog(l *slog.Logger) *guestLog { return &guestLog{log: l} }

func (g *guestLog) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.partial = append(g.partial, p...)
	for {
		i := bytes.IndexByte(g.partial, '\n')
		if i < 0 {
			if len(g.partial) > 4096 {
				i = 4096
			} else {
				break
			}
		}
		g.emit(string(g.partial[:i]))
		g.partial = g.partial[min(i+1, len(g.partial)):]
	}
	return len(p), nil
}

func (g *guestLog) emit(line string) {
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
