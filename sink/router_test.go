package sink

import (
	"fmt"
	"sync"
	"testing"
)

// Buckets (read by /metrics and /targets) while a job's first scrape
// makes its bucket's sink: the bucket map was read after its lock was let
// go, a concurrent map read and write that -race reports.
func TestRouterBucketsWhileBucketsAppear(t *testing.T) {
	def, err := New(fastConfig(), &fakeWriter{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter(def, func(string) (*Sink, error) { return New(fastConfig(), &fakeWriter{}, discard) }, discard)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 200 {
			r.sinkFor(fmt.Sprintf("bucket-%d", i))
		}
	}()
	go func() {
		defer wg.Done()
		for range 200 {
			r.Buckets()
		}
	}()
	wg.Wait()
	if got := len(r.Buckets()); got != 200 {
		t.Fatalf("%d buckets, want 200", got)
	}
}
