package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelayDoublesWithinBounds(t *testing.T) {
	lo, hi := time.Second, 30*time.Second
	for attempt := 0; attempt < 70; attempt++ {
		step := lo << min(max(attempt, 1)-1, 20)
		if step > hi || step <= 0 {
			step = hi
		}
		for range 200 {
			d := Delay(attempt, lo, hi)
			if d < step/2 || d > step {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, step/2, step)
			}
		}
	}
	// The jitter spreads: 200 draws at the cap are not all alike.
	seen := map[time.Duration]bool{}
	for range 200 {
		seen[Delay(10, lo, hi)] = true
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct delays in 200", len(seen))
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep reported an hour passed on a cancelled context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep of 1ms did not report it passed")
	}
}
