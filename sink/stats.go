package sink

import (
	"errors"
	"sync/atomic"
	"time"
)

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
	// DropCorrupt: samples in a disk queue file found damaged or torn.
	DropCorrupt
	// DropRelabeled: series dropped by metric_relabel_configs.
	DropRelabeled
	// DropOutOfRange: exposed timestamps InfluxDB cannot store.
	DropOutOfRange
	// DropDiskError: the oldest data the disk queue refused, past the
	// memory bound while the disk refuses writes.
	DropDiskError
	// DropSeriesLimit: samples of new series past a target's series limit.
	DropSeriesLimit
	// DropSeriesBudget: samples of new series past --max-hourly-series or
	// --max-daily-series.
	DropSeriesBudget
	// DropSchemaLimit: samples the InfluxDB 3 schema guard held back: a
	// table or column they would make passes the server's limits.
	DropSchemaLimit
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{"non_finite", "rejected", "queue_full", "shutdown", "invalid_name", "corrupt_queue", "relabeled", "out_of_range", "disk_error", "series_limit", "series_budget", "schema_limit"}

func (r DropReason) String() string { return dropReasonNames[r] }

// rejectClasses are InfluxDB's reasons for refusing lines, as counted.
var rejectClasses = []string{"parse", "type_conflict", "retention", "limit", "other"}

// Stats counts samples through the sink. At any quiet moment
// Scraped + Recovered == Written + sum(Dropped) + Queued, where Recovered is
// what an earlier run left in the disk queue.
type Stats struct {
	scraped, recovered, written, queuedSamples, queuedBytes atomic.Int64
	dropped                                                 [numDropReasons]atomic.Int64
	rejected                                                [5]atomic.Int64 // by rejectClasses

	writesOK, writesFailed, consecutiveFailures atomic.Int64
	lastWrite                                   atomic.Int64 // unix nanoseconds of the last successful write
	writeSeconds                                atomic.Int64 // total nanoseconds spent in write requests
	answers                                     [len(answerClasses)]atomic.Int64
	latency                                     [numLatencyBuckets + 1]atomic.Int64 // per bucket, +Inf last
	failing                                     atomic.Bool
	lastError                                   atomic.Pointer[string] // of the last failed write, with what to do
	since                                       atomic.Int64           // unix nanoseconds the sink was made
}

// StatsSnapshot is a copy of the counters.
type StatsSnapshot struct {
	Scraped, Recovered, Written, QueuedSamples, QueuedBytes int64
	Dropped                                                 map[string]int64
	// Rejected: samples InfluxDB refused, by its reason.
	Rejected map[string]int64
	// Write requests by outcome, the failures since the last success, the
	// time of the last success (zero: none yet) and the time spent writing.
	WritesOK, WritesFailed, ConsecutiveFailures int64
	LastWrite                                   time.Time
	WriteTime                                   time.Duration
	// LastWriteError is the last failed write's error and what to do;
	// Since is when the sink was made.
	LastWriteError string
	Since          time.Time
	// Answers counts write answers by status ("204", "401", "5xx",
	// "network"...); LatencyCounts are write requests per bucket of
	// WriteLatencyBuckets, +Inf last.
	Answers       map[string]int64
	LatencyCounts []int64
}

// Undelivered is how long nothing could be written while writes fail:
// since the last answered write (or the start), zero while they succeed.
func (s StatsSnapshot) Undelivered(now time.Time) time.Duration {
	if s.ConsecutiveFailures == 0 {
		return 0
	}
	from := s.LastWrite
	if from.IsZero() {
		from = s.Since
	}
	return now.Sub(from)
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

func (s *Stats) addRejected(class string, n int) {
	for i, c := range rejectClasses {
		if c == class || i == len(rejectClasses)-1 {
			s.rejected[i].Add(int64(n))
			return
		}
	}
}

// answerClasses are how write answers are counted: the status codes the
// writer treats apart, the rest by class, and network for no answer.
var answerClasses = [...]string{"204", "400", "401", "403", "404", "413", "422", "429", "other_4xx", "5xx", "network", "other"}

func answerClass(err error) int {
	if err == nil {
		return 0
	}
	var we *WriteError
	if !errors.As(err, &we) {
		return 10
	}
	switch c := we.StatusCode; {
	case c == 400:
		return 1
	case c == 401:
		return 2
	case c == 403:
		return 3
	case c == 404:
		return 4
	case c == 413:
		return 5
	case c == 422:
		return 6
	case c == 429:
		return 7
	case c >= 400 && c < 500:
		return 8
	case c >= 500:
		return 9
	default:
		return 11
	}
}

// WriteLatencyBuckets are the upper bounds of the write latency histogram.
var WriteLatencyBuckets = [numLatencyBuckets]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

const numLatencyBuckets = 12

// observeWrite counts one write request. An answer that refuses lines is
// an answer: InfluxDB is there and takes writes.
func (s *Stats) observeWrite(err error, act writeAction, d time.Duration) {
	s.writeSeconds.Add(int64(d))
	s.answers[answerClass(err)].Add(1)
	b := len(WriteLatencyBuckets)
	for i, ub := range WriteLatencyBuckets {
		if d.Seconds() <= ub {
			b = i
			break
		}
	}
	s.latency[b].Add(1)
	if err == nil || act == actPartial || act == actBadData || act == actTooLarge {
		s.writesOK.Add(1)
		s.consecutiveFailures.Store(0)
		s.lastWrite.Store(time.Now().UnixNano())
		s.failing.Store(false)
		return
	}
	s.writesFailed.Add(1)
	s.consecutiveFailures.Add(1)
	s.failing.Store(true)
	msg := err.Error() + " (" + hint(err) + ")"
	s.lastError.Store(&msg)
}

func (s *Stats) snapshot() StatsSnapshot {
	out := StatsSnapshot{
		Scraped:             s.scraped.Load(),
		Recovered:           s.recovered.Load(),
		Written:             s.written.Load(),
		QueuedSamples:       s.queuedSamples.Load(),
		QueuedBytes:         s.queuedBytes.Load(),
		Dropped:             map[string]int64{},
		Rejected:            map[string]int64{},
		WritesOK:            s.writesOK.Load(),
		WritesFailed:        s.writesFailed.Load(),
		ConsecutiveFailures: s.consecutiveFailures.Load(),
		WriteTime:           time.Duration(s.writeSeconds.Load()),
	}
	out.Since = time.Unix(0, s.since.Load())
	out.Answers = map[string]int64{}
	for i, c := range answerClasses {
		out.Answers[c] = s.answers[i].Load()
	}
	for i := range s.latency {
		out.LatencyCounts = append(out.LatencyCounts, s.latency[i].Load())
	}
	if e := s.lastError.Load(); e != nil && out.ConsecutiveFailures > 0 {
		out.LastWriteError = *e
	}
	if t := s.lastWrite.Load(); t != 0 {
		out.LastWrite = time.Unix(0, t)
	}
	for r := range s.dropped {
		out.Dropped[DropReason(r).String()] = s.dropped[r].Load()
	}
	for i, c := range rejectClasses {
		out.Rejected[c] = s.rejected[i].Load()
	}
	return out
}

// add sums o into s (several buckets' sinks): counters add up, the
// failure view (failures in a row, last write, last error) is the worst
// one's, so /readyz and the page tell about the bucket that fails.
func (s *StatsSnapshot) add(o StatsSnapshot) {
	s.Scraped += o.Scraped
	s.Recovered += o.Recovered
	s.Written += o.Written
	s.QueuedSamples += o.QueuedSamples
	s.QueuedBytes += o.QueuedBytes
	s.WritesOK += o.WritesOK
	s.WritesFailed += o.WritesFailed
	s.WriteTime += o.WriteTime
	for _, m := range []struct{ dst, src map[string]int64 }{{s.Dropped, o.Dropped}, {s.Rejected, o.Rejected}, {s.Answers, o.Answers}} {
		for k, v := range m.src {
			m.dst[k] += v
		}
	}
	for i := range s.LatencyCounts {
		if i < len(o.LatencyCounts) {
			s.LatencyCounts[i] += o.LatencyCounts[i]
		}
	}
	now := time.Now()
	if o.Undelivered(now) > s.Undelivered(now) {
		s.ConsecutiveFailures, s.LastWrite, s.LastWriteError, s.Since = o.ConsecutiveFailures, o.LastWrite, o.LastWriteError, o.Since
	}
}
