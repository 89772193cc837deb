package sink

import "sync/atomic"

// DropReason says why samples were not written.
type DropReason int

// Reasons for dropping samples.
const (
	// DropNonFinite: NaN or ±Inf values, which InfluxDB cannot store.
	DropNonFinite DropReason = iota
	// DropRejected: lines InfluxDB refused (400/422) on their own.
	DropRejected
	// DropQueueFull: oldest batches dropped to stay within the queue bound.
	DropQueueFull
	// DropShutdown: batches still unwritten when the shutdown deadline hit.
	DropShutdown
	// DropInvalidName: samples whose metric name line protocol cannot carry.
	DropInvalidName
	// DropCorrupt: samples in a disk queue file found corrupt or torn.
	DropCorrupt
	// DropRelabeled: series dropped by metric_relabel_configs.
	DropRelabeled
	// DropOutOfRange: exposed timestamps InfluxDB cannot store.
	DropOutOfRange
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{"non_finite", "rejected", "queue_full", "shutdown", "invalid_name", "corrupt_queue", "relabeled", "out_of_range"}

func (r DropReason) String() string { return dropReasonNames[r] }

// Stats counts samples through the sink. At any quiet moment
// Scraped + Recovered == Written + sum(Dropped) + Queued, where Recovered is
// what an earlier run left in the disk queue.
type Stats struct {
	scraped, recovered, written, queuedSamples, queuedBytes atomic.Int64
	dropped                                                 [numDropReasons]atomic.Int64
}

// StatsSnapshot is a copy of the counters.
type StatsSnapshot struct {
	Scraped, Recovered, Written, QueuedSamples, QueuedBytes int64
	Dropped                                                 map[string]int64
}

// DroppedTotal sums the drops of every reason.
func (s StatsSnapshot) DroppedTotal() int64 {
	var n int64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

func (s *Stats) addDropped(r DropReason, n int) {
	if n != 0 {
		s.dropped[r].Add(int64(n))
	}
}

func (s *Stats) snapshot() StatsSnapshot {
	out := StatsSnapshot{
		Scraped:       s.scraped.Load(),
		Recovered:     s.recovered.Load(),
		Written:       s.written.Load(),
		QueuedSamples: s.queuedSamples.Load(),
		QueuedBytes:   s.queuedBytes.Load(),
		Dropped:       map[string]int64{},
	}
	for r := range s.dropped {
		out.Dropped[DropReason(r).String()] = s.dropped[r].Load()
	}
	return out
}
