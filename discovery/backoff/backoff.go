// Package backoff is the one retry timing of scrapeflux: Consul queries,
// writes to InfluxDB and the registration of a node all wait by it after
// a failure. It lives under discovery, the first stage, so every stage
// can import it.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay is how long to wait before retry attempt (1 for the first):
// capped exponential from lo to hi, with jitter over its upper half so
// that clients failing together do not retry together, and never less
// than half of the step (a retry storm is impossible).
func Delay(attempt int, lo, hi time.Duration) time.Duration {
	d := lo << min(max(attempt, 1)-1, 20)
	if d > hi || d <= 0 {
		d = hi
	}
	return d/2 + rand.N(d/2+1)
}

// Sleep waits d or until ctx ends; it reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
