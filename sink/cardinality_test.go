package sink

import (
	"fmt"
	"math"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/scrapeflux/scrapeflux/scrape"
)

// The budget's stated error: once the budget of 10,000 is used, of the
// 90,000 more new series offered about 0.06 % get through (Bloom false
// positives; at most 0.2 % accepted here); a new window starts afresh.
func TestSeriesBudgetError(t *testing.T) {
	b := newSeriesBudget(10000, time.Hour)
	t0 := time.Unix(1_700_000_000, 0)
	admitted := 0
	for i := 0; i < 100000; i++ {
		if b.admit(42, xxhash.Sum64(fmt.Appendf(nil, "s{i=\"%d\"}", i)), t0) {
			admitted++
		}
	}
	used, _, held := b.state()
	if used != 10000 || admitted < 10000 || admitted-10000 > 180 {
		t.Fatalf("admitted %d (used %d, held %d) of a 10,000 budget", admitted, used, held)
	}
	t.Logf("100,000 new series against 10,000: %d admitted, %.3f%% of the 90,000 past the budget", admitted, 100*float64(admitted-10000)/90000)
	// Known series keep flowing.
	if !b.admit(42, xxhash.Sum64([]byte(`s{i="7"}`)), t0.Add(time.Minute)) {
		t.Fatal("a known series was held back")
	}
	// The next hour starts afresh.
	if !b.admit(42, xxhash.Sum64([]byte(`s{i="99999"}`)), t0.Add(time.Hour)) {
		t.Fatal("a new window did not start afresh")
	}
}

// A target's tracker forgets series not seen for an hour, and counts
// new series over the last hour only.
func TestSeriesTrackerSlidingHour(t *testing.T) {
	tr := newSeriesTracker(3)
	now := int64(1_700_000_000)
	for i := 0; i < 3; i++ {
		if ok, _ := tr.admit(xxhash.Sum64(fmt.Appendf(nil, "a%d", i)), now); !ok {
			t.Fatal("refused within the limit")
		}
	}
	if ok, _ := tr.admit(xxhash.Sum64([]byte("b")), now+10); ok {
		t.Fatal("admitted past the limit")
	}
	if n := tr.newLastHour(now + 30*60); n != 3 {
		t.Fatalf("%d new in the last hour, want 3", n)
	}
	// An hour and more later the old series are gone: room again.
	later := now + seriesWindow + 120
	if ok, _ := tr.admit(xxhash.Sum64([]byte("b")), later); !ok {
		t.Fatal("series not forgotten after an hour")
	}
	if n := tr.newLastHour(later); n != 1 {
		t.Fatalf("%d new in the last hour, want 1", n)
	}
}

// BenchmarkSeriesTrackerMemory measures the heap a target's series
// tracker holds per series (the series limit's memory), with the label
// values it remembers for the widest labels.
func BenchmarkSeriesTrackerMemory(b *testing.B) {
	const series = 100_000
	var lset labels.Labels
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tr := newSeriesTracker(0)
		for j := 0; j < series; j++ {
			k := xxhash.Sum64([]byte(fmt.Sprintf(`m{id="%d"}`, j)))
			if _, isNew := tr.admit(k, 1_000_000); isNew {
				smp := scrape.SyntheticSample(labels.FromStrings("__name__", "m", "id", strconv.Itoa(j)), model.MetricTypeGauge, 1, 0)
				tr.notice(&smp, &lset)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/series, "B/series")
		runtime.KeepAlive(tr)
	}
}

// The widest labels' sketch: within 5 % up to a thousand values, full
// (at least 7,098) past about 7,000.
func TestValueSketch(t *testing.T) {
	for _, n := range []int{1, 12, 100, 1000, 3000} {
		var v valueSketch
		for i := 0; i < n; i++ {
			v.add(xxhash.Sum64String(fmt.Sprintf("value-%d", i)))
			v.add(xxhash.Sum64String(fmt.Sprintf("value-%d", i/2))) // seen twice: counted once
		}
		got, full := v.count()
		if full || math.Abs(float64(got-n)) > 0.05*float64(n)+0.5 {
			t.Errorf("%d values: counted %d (full %v)", n, got, full)
		}
	}
	var v valueSketch
	for i := 0; i < 20000; i++ {
		v.add(xxhash.Sum64String(fmt.Sprintf("id-%d", i)))
	}
	if got, full := v.count(); !full || got != 7098 {
		t.Errorf("20,000 values: %d, full %v", got, full)
	}
}
