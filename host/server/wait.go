package server

import (
	"context"
	"log/slog"
	"time"
)

// startupWait is how long a starting host waits for ClickHouse and Kafka:
// a host restarted while one of them restarts too comes up with it instead
// of exiting.
const startupWait = time.Minute

// waitFor calls probe until it succeeds, ctx ends or startupWait passes,
// logging each failure, and returns the last error.
func waitFor(ctx context.Context, log *slog.Logger, what string, probe func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, startupWait)
	defer cancel()
	for backoff := 250 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		err := probe(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		log.Warn("waiting for "+what, "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}
