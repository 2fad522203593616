//go:build !linux

package sandbox

import "time"

// threadTime falls back to the wall clock where the thread's CPU clock is
// not at hand: a loaded box then stops calls sooner than Linux does.
func threadTime() time.Duration { return wallTime() }
