package sink

import (
	"fmt"
	"hash/maphash"
	"math"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/scrapeflux/scrapeflux/scrape"
)

// Metric relabeling, decided once per series and remembered (with the
// line key of a rewritten series) while the series keeps coming.

// evictAfter is how many scrapes a series may be absent before its metric
// relabeling decision is forgotten.
const evictAfter = 4

// action is what metric relabeling does to a series.
type action uint8

const (
	actKeep    action = iota + 1 // leaves it as it is
	actDrop                      // drops it
	actRewrite                   // changes its labels
)

type decision struct {
	seen uint32 // scrape generation that last saw the series (to within one)
	act  action
	// For a rewritten series: its line key and field key as written, so
	// relabeling runs once per series, not once per sample. They sit in
	// the converter's arena at off (n bytes, the line key's keyLen
	// first): no allocation and no pointer per series, so the garbage
	// collector has nothing to scan in them.
	off, n, keyLen uint32
}

// seriesKey keys a series' decision by two independent 64-bit hashes of
// its text, one of them seeded at random per process: 64 bits alone let
// two series of one target collide about once in 2^32 pairs, and the
// second would silently take the first one's decision (kept, dropped,
// its line key). Keying by the text itself would hold every series' text
// per target, as much memory again as the line keys.
type seriesKey struct{ a, b uint64 }

var decisionSeed = maphash.MakeSeed()

func keyOf(series []byte) seriesKey {
	return seriesKey{xxhash.Sum64(series), maphash.Bytes(decisionSeed, series)}
}

// decide applies metric relabeling to a series once and remembers the
// outcome while the series keeps coming. It returns the series hash and,
// for a series seen before, its decision (with the cached keys of a
// rewrite).
func (c *converter) decide(sc *scratch, s *scrape.Sample) (action, seriesKey, []byte, int, error) {
	h := keyOf(s.Series)
	if d, ok := c.decisions[h]; ok {
		// Written back every other scrape, not every scrape: eviction
		// needs the generation to within one.
		if c.gen-d.seen >= 2 {
			d.seen = c.gen
			c.decisions[h] = d
		}
		if d.n == 0 {
			return d.act, h, nil, 0, nil
		}
		return d.act, h, c.arena[d.off : d.off+d.n], int(d.keyLen), nil
	}
	s.Labels(&sc.lset)
	if name, dup := sc.lset.HasDuplicateLabelNames(); dup {
		return 0, h, nil, 0, fmt.Errorf("%w %q in %s", ErrDuplicateLabel, name, s.Series)
	}
	if sc.lb == nil {
		sc.lb = labels.NewBuilder(labels.EmptyLabels())
	}
	sc.lb.Reset(sc.lset)
	act := actKeep
	if !relabel.ProcessBuilder(sc.lb, c.app.MetricRelabelConfigs...) {
		act = actDrop
	} else if !labels.Equal(sc.lb.Labels(), sc.lset) {
		act = actRewrite
	}
	c.decisions[h] = decision{seen: c.gen, act: act}
	return act, h, nil, 0, nil
}

// remember keeps the keys a rewritten series is written with: key (its
// first keyLen bytes the line key, the rest the field key).
func (c *converter) remember(h seriesKey, line, field []byte) {
	n := len(line) + len(field)
	if len(c.arena)+n > math.MaxUint32 {
		return // not cached: rewritten again next time
	}
	d := c.decisions[h]
	d.off, d.n, d.keyLen = uint32(len(c.arena)), uint32(n), uint32(len(line))
	c.arena = append(append(c.arena, line...), field...)
	c.arenaLive += n
	c.decisions[h] = d
}

// evict forgets relabeling decisions of series not seen for a while; every
// few scrapes, so the sweep costs little per scrape.
func (c *converter) evict() {
	if c.decisions == nil || c.gen%evictAfter != 0 {
		return
	}
	for h, d := range c.decisions {
		if c.gen-d.seen > evictAfter {
			c.arenaLive -= int(d.n)
			delete(c.decisions, h)
		}
	}
	// The arena only grows between compactions: compact it once half of
	// it is keys of series gone.
	if len(c.arena) > 2*c.arenaLive+64<<10 {
		arena := make([]byte, 0, c.arenaLive+c.arenaLive/8)
		for h, d := range c.decisions {
			if d.n > 0 {
				off := len(arena)
				arena = append(arena, c.arena[d.off:d.off+d.n]...)
				d.off = uint32(off)
				c.decisions[h] = d
			}
		}
		c.arena = arena
	}
}
