package sink

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBreaker_OpensAfterFailuresThenHalfOpensAndClosesOnSuccess(t *testing.T) {
	b := &Breaker{Failures: 2, CoolDown: 20 * time.Millisecond, MaxCoolDown: 40 * time.Millisecond}
	down := errors.New("connection refused")
	ctx := context.Background()
	calls := 0
	fail := func(context.Context) error { calls++; return down }
	for range 2 {
		if err := b.Do(ctx, fail); !errors.Is(err, down) {
			t.Fatalf("Do = %v, want the write's error", err)
		}
	}
	if s, err := b.Status(); s != Open || !errors.Is(err, down) {
		t.Fatalf("after 2 failures: %v %v, want open with the cause", s, err)
	}
	// While open, a caller with a short deadline is refused without a write.
	short, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
	defer cancel()
	if err := b.Do(short, fail); !errors.Is(err, ErrOpen) || calls != 2 {
		t.Fatalf("open breaker: Do = %v after %d calls, want ErrOpen and no write", err, calls)
	}
	// After the cool-down one trial goes through and closes it.
	if err := b.Do(ctx, func(context.Context) error { calls++; return nil }); err != nil || calls != 3 {
		t.Fatalf("trial: %v after %d calls", err, calls)
	}
	if s, err := b.Status(); s != Closed || err != nil {
		t.Fatalf("after a good trial: %v %v, want closed", s, err)
	}
}

func TestBreaker_FailedTrialReopensForLonger(t *testing.T) {
	b := &Breaker{Failures: 1, CoolDown: 10 * time.Millisecond, MaxCoolDown: time.Hour}
	down := errors.New("down")
	ctx := context.Background()
	b.Do(ctx, func(context.Context) error { return down })
	start := time.Now()
	b.Do(ctx, func(context.Context) error { return down }) // the trial, after 10ms
	if s, _ := b.Status(); s != Open {
		t.Fatalf("after a failed trial: %v, want open", s)
	}
	b.Do(ctx, func(context.Context) error { return nil }) // waits the doubled cool-down
	if waited := time.Since(start); waited < 30*time.Millisecond {
		t.Fatalf("cool-downs did not grow: %v for 10ms + 20ms", waited)
	}
}

func TestBreaker_CancelledWriteDoesNotCount(t *testing.T) {
	b := &Breaker{Failures: 1}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.Do(ctx, func(ctx context.Context) error { return ctx.Err() })
	if s, _ := b.Status(); s != Closed {
		t.Fatalf("a write cancelled by its caller opened the breaker: %v", s)
	}
}
