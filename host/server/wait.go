package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// waitFor calls probe until it succeeds or ctx ends (the host is stopped),
// logging each failure and telling note, and returns the last error. A starting host waits
// for ClickHouse and Kafka as long as they take: one restarted while either
// is down, for however long, comes up with it instead of exiting, and an
// address that is wrong shows in the log every few seconds.
func waitFor(ctx context.Context, log *slog.Logger, note func(string), what string, probe func(context.Context) error) error {
	for backoff := 250 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		err := probe(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		log.Warn("waiting for "+what, "err", err, "retry_in", backoff)
		note(fmt.Sprintf("waiting for %s: %v", what, err))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}
