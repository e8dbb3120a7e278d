package testutil

import (
	"testing"
	"time"
)

// PollInterval is how often WaitFor evaluates its condition.
const PollInterval = 5 * time.Millisecond

// WaitFor calls cond every PollInterval until it returns true, and fails
// the test with "timed out after <timeout> waiting for <what>" if it has
// not by the time timeout has passed. cond is first called at once, and
// is always called from the test's goroutine; it must not block.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}
