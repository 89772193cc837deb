package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/scrapeflux/scrapeflux/discovery/backoff"
	"github.com/scrapeflux/scrapeflux/sink/schema"
)

// The writer: one goroutine that takes queued batches in order, merged up
// to a batch size, and sends each until InfluxDB has answered for every
// line of it (written, or refused and counted).

// write sends queued batches in order, merged up to BatchSize lines, until
// the queue is closed and empty or ctx ends.
func (s *Sink) write(ctx context.Context) {
	var merge []byte
	for {
		j := s.q.Take(ctx, int(s.writeLines.Load()), merge)
		if j == nil {
			return
		}
		if j.ReadErr != nil {
			s.stats.addDropped(DropCorrupt, int(j.Unreadable.Samples))
			s.log.Error("cannot read a record back from the disk queue; it is lost", "samples", j.Unreadable.Samples, "err", j.ReadErr)
		}
		p := part{j.Body, j.Lines, j.Samples, j.GZ}
		if j.Lines > 0 && (!p.gz || j.Records() == 1 || s.oneMember(&p)) && !s.deliver(ctx, p) {
			s.q.Untake(j)
			return
		}
		if j.Merged {
			merge = j.Body[:0]
		}
		s.stats.queuedSamples.Add(-j.Taken.Samples)
		s.stats.queuedBytes.Add(-j.Taken.Bytes)
		for _, b := range s.q.Ack(j) {
			select {
			case s.bufs <- b[:0]:
			default:
			}
		}
		s.rejects.report(false)
	}
}

// part is a run of lines of a job still to be answered for, gzip'd when
// gz.
type part struct {
	buf            []byte
	lines, samples int
	gz             bool
}

// maxNamed bounds the requests spent taking out lines an answer names
// when the server stored nothing (2.x names one line per answer): past
// it, the rest is found by bisection.
const maxNamed = 32

// maxBlindSplits: a server that refuses every part of a job after this
// many splits (a proxy answering 400 to everything) is not refusing
// lines; the rest of the job is dropped and counted then, rather than
// split down to every line.
const maxBlindSplits = 32

// deliver sends a job's body until InfluxDB has answered for every line:
// written, or refused and counted. It reports false when ctx ended first;
// nothing of the job is then marked done (it is sent again, and InfluxDB
// keeps one point per series and time). A gzip'd body refused for its
// data is decompressed to find the lines at fault.
//
// What it costs per job: one request when everything is stored; one when
// InfluxDB 3 or a complete 1.x answer names what it refused (the rest was
// stored); 1 + refused lines, up to maxNamed, when the server stores
// nothing and names one line per answer (2.x); then about 2 requests per
// refused line per halving (bisection). A good line is never dropped: a
// 413 is split down to single lines, and only a single line refused on
// its own is dropped.
func (s *Sink) deliver(ctx context.Context, body part) bool {
	parts := []part{body}
	if wl := int(s.writeLines.Load()); wl < s.cfg.BatchSize && body.lines > wl && body.lines > 1 {
		// A 413 lowered the request size below the batch size: a batch
		// larger than that is split now rather than be refused for it
		// again. Without a 413 a batch goes whole, even one sealed past
		// the batch size (a batch is sealed after the scrape that fills
		// it).
		if body.gz && !s.inflate(&body, "splitting a batch larger than InfluxDB takes") {
			return true
		}
		parts = splitUpTo(body, wl)
	}
	named, splits, accepted := 0, 0, false
	attempt := 0
	created := false // one attempt to create a missing database per job
	for len(parts) > 0 {
		p := &parts[0]
		if p.gz && s.cw == nil && !s.inflate(p, "the writer takes no gzip'd bodies (compression was turned off with compressed batches queued)") {
			parts = parts[1:]
			continue
		}
		start := time.Now()
		err := s.send(ctx, p)
		s.noteServer()
		act, wait := classify(err)
		s.stats.observeWrite(err, act, time.Since(start))
		if act != actDone && ctx.Err() != nil {
			return false
		}
		var we *WriteError
		errors.As(err, &we)
		switch act {
		case actDone:
			s.health.ok()
			s.stats.written.Add(int64(p.samples))
			parts, attempt, accepted = parts[1:], 0, true
			continue
		case actPartial, actBadData, actTooLarge:
			if p.gz && !s.inflate(p, "finding the lines InfluxDB refused: "+err.Error()) {
				parts, attempt = parts[1:], 0
				continue
			}
		}
		switch act {
		case actPartial, actBadData:
			s.health.ok()
			if len(we.Refused) > 0 {
				// InfluxDB 3 names refused lines by number.
				rest, refused := s.takeOutNumbered(p, we)
				if we.Stored {
					// Stored but for the refused lines: never sent again.
					s.stats.written.Add(int64(p.samples - refused))
					parts, attempt, accepted = parts[1:], 0, true
					continue
				}
				if rest.lines < p.lines && named < maxNamed {
					named++
					if rest.lines == 0 {
						parts = parts[1:]
					} else {
						*p = rest
					}
					continue
				}
			} else if s.learnRefusal(nil, we.Message) && schema.RefusesDatabase(we.Message) {
				// InfluxDB 3 refuses the database for its limit: every line
				// of it would be refused alike, so none is sent again.
				s.dropRefused(p.lines, p.samples, "limit", we.Message, firstLine(p.buf))
				s.log.Warn("InfluxDB 3 refuses the database for its databases limit; its lines are held back from now on (delete a database, raise the limit, or route jobs elsewhere, then restart)", "database", s.schema.Name(), "answer", cut(we.Message, 300))
				parts, attempt = parts[1:], 0
				continue
			} else {
				ref := parseRefusal(we.Message)
				if act == actPartial && ref.complete {
					// Stored but for the refused lines: never sent again.
					d := s.refused(p, ref, we.Message)
					s.stats.written.Add(int64(p.samples - d))
					parts, attempt, accepted = parts[1:], 0, true
					continue
				}
				// Nothing was stored, or the answer was cut short before it
				// named every refused line: take out the lines it names and
				// send the rest again (what was stored is stored once).
				if named < maxNamed {
					if rest, ok := s.takeOutNamed(p, ref, we.Message); ok {
						named++
						if rest.lines == 0 {
							parts = parts[1:]
						} else {
							*p = rest
						}
						continue
					}
				}
				if act == actPartial {
					// Stored, and nothing more can be learnt of the rest.
					s.stats.written.Add(int64(p.samples))
					parts, attempt, accepted = parts[1:], 0, true
					continue
				}
			}
			if p.lines <= 1 {
				s.learnRefusal(bytes.TrimSuffix(p.buf, []byte("\n")), we.Message)
				s.dropRefused(p.lines, p.samples, refusalClass(we.Message), we.Message, firstLine(p.buf))
				parts = parts[1:]
				continue
			}
			if splits >= maxBlindSplits && !accepted {
				for _, q := range parts {
					s.dropRefused(q.lines, q.samples, refusalClass(we.Message), we.Message, firstLine(q.buf))
				}
				s.log.Warn("InfluxDB refused every part of a batch after "+strconv.Itoa(splits)+" splits; dropped the rest of it (it is not refusing single lines: check what answers at --influx-url)", "answer", cut(we.Message, 300))
				parts = nil
				continue
			}
			splits++
			a, c := splitPart(*p)
			parts = append([]part{a, c}, parts[1:]...)
			continue
		case actTooLarge:
			s.health.ok()
			if p.lines <= 1 {
				s.dropRefused(p.lines, p.samples, "limit", we.Message, firstLine(p.buf))
				parts = parts[1:]
				continue
			}
			s.shrinkWrites(p)
			a, c := splitPart(*p)
			parts = append([]part{a, c}, parts[1:]...)
			continue
		}
		if we != nil && we.StatusCode == http.StatusNotFound && strings.Contains(we.Message, "database not found") && s.cfg.CreateDatabase && !created {
			if dc, ok := s.w.(DatabaseCreator); ok {
				created = true
				if cerr := dc.CreateDatabase(ctx); cerr == nil {
					s.log.Info("InfluxDB had no database "+strconv.Quote(dc.Database())+"; created it", "database", dc.Database())
					continue
				} else {
					err = fmt.Errorf("%w; and %w", err, cerr)
				}
			}
		}
		attempt++
		s.health.fail(ctx, err, act == actNeedsPerson, s.stats.queuedBytes.Load())
		d := backoff.Delay(attempt, s.cfg.MinBackoff, s.cfg.MaxBackoff)
		if act == actNeedsPerson {
			// Retried often enough that a fixed configuration (a database
			// created, a token granted) is noticed within seconds.
			d = min(s.cfg.MaxBackoff, needsPersonRetry)
		}
		if wait > 0 {
			d = min(wait, maxRetryAfter)
		}
		if !backoff.Sleep(ctx, d) {
			return false
		}
	}
	return true
}

// needsPersonRetry is the wait between writes while InfluxDB's answer
// says its configuration is wrong.
const needsPersonRetry = 4 * time.Second

// shrinkWrites remembers that InfluxDB refused p as too large: requests
// carry at most half its lines from now on.
func (s *Sink) shrinkWrites(p *part) {
	half := int64(max(1, p.lines/2))
	if cur := s.writeLines.Load(); half < cur {
		s.writeLines.Store(half)
		s.log.Warn("InfluxDB refused a request as too large (413); sending at most "+strconv.FormatInt(half, 10)+" lines per request from now on (raise the server's limit, e.g. max-body-size, or lower --batch-size)",
			"lines", p.lines, "bytes", len(p.buf))
	}
}

// takeOutNumbered removes from p the lines an InfluxDB 3 answer names by
// number (1-based, in the body as sent), counting them as refused, and
// returns the rest with the samples refused.
func (s *Sink) takeOutNumbered(p *part, we *WriteError) (rest part, samples int) {
	reasons := make(map[int]string, len(we.Refused))
	for _, r := range we.Refused {
		reasons[r.Number] = r.Reason
	}
	var lines int
	var example, reason string
	n := 0
	forLines(p.buf, func(ln []byte) {
		n++
		why, ok := reasons[n]
		if !ok {
			rest.buf = append(append(rest.buf, ln...), '\n')
			rest.lines++
			return
		}
		lines++
		samples += countSamples(ln)
		s.learnRefusal(ln, why)
		if example == "" {
			example, reason = string(ln), why
		}
	})
	rest.samples = p.samples - samples
	if lines > 0 {
		s.dropRefused(lines, samples, refusalClass(reason), we.Message+": "+reason, example)
	}
	return rest, samples
}

// send writes p, gzip'd or plain.
func (s *Sink) send(ctx context.Context, p *part) error {
	if p.gz {
		return s.cw.WriteCompressed(ctx, p.buf)
	}
	return s.w.Write(ctx, p.buf)
}

// inflate turns gzip'd p into plain lines, to look into them or for a
// writer that takes plain ones only (why says which). A body that does not
// decompress (it was checked when read back, so this is not expected) is
// counted as corrupt and logged; inflate then reports false.
func (s *Sink) inflate(p *part, why string) bool {
	if err := p.decompress(); err != nil {
		s.stats.addDropped(DropCorrupt, p.samples)
		s.log.Error("a queued batch does not decompress; it is lost", "samples", p.samples, "needed_for", why, "err", err)
		return false
	}
	return true
}

// oneMember makes a run of gzip'd records, one gzip member each, a single
// member. Go's reader and InfluxDB 1.x and 2.x read every member of a
// body, but InfluxDB 3 releases whose server decodes with flate2's
// GzDecoder read the first and store nothing of the rest, without an
// error: a run sent as concatenated members would lose all but its first
// batch. The cost, a decompression and a compression, is paid only for
// runs merged after an outage. It reports false when the run does not
// decompress (its lines are then counted as lost, corrupt_queue).
func (s *Sink) oneMember(p *part) bool {
	if !s.inflate(p, "joining queued batches into one gzip member") {
		return false
	}
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	_, err := zw.Write(p.buf)
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return true // sent plain: nothing is lost
	}
	p.buf, p.gz = b.Bytes(), true
	return true
}

// decompress makes a gzip'd part plain.
func (p *part) decompress() error {
	zr, err := gzip.NewReader(bytes.NewReader(p.buf))
	var plain bytes.Buffer
	if err == nil {
		_, err = plain.ReadFrom(zr)
	}
	if err != nil {
		return fmt.Errorf("queued batch does not decompress: %w", err)
	}
	p.buf, p.gz = plain.Bytes(), false
	return nil
}

// refused counts what a partial write refused and returns its samples:
// the lines the answer names exactly, and for "dropped=N" points it does
// not name, N lines' worth at the part's average.
func (s *Sink) refused(p *part, ref refusal, msg string) int {
	lines, samples, example := ref.split(p.buf, nil)
	if ref.dropped > 0 && p.lines > lines {
		if ref.reason == "retention" {
			// Points beyond the retention policy are the oldest ones: the
			// dropped=N lines with the oldest timestamps, counted exactly.
			samples += oldestSamples(p.buf, ref, ref.dropped)
		} else {
			per := float64(p.samples-samples) / float64(p.lines-lines)
			samples += max(ref.dropped, int(float64(ref.dropped)*per+0.5))
		}
		lines += ref.dropped
	}
	samples = min(samples, p.samples)
	if lines > 0 {
		s.dropRefused(lines, samples, ref.reason, msg, example)
	}
	return samples
}

// oldestSamples counts the samples of the n lines of buf with the oldest
// timestamps, leaving out lines the answer names. Lines of one scrape
// share a timestamp; when n ends inside such a group, the group's lines
// are counted at their average.
func oldestSamples(buf []byte, ref refusal, n int) int {
	type group struct{ lines, samples int }
	byTS := map[int64]*group{}
	forLines(buf, func(ln []byte) {
		if ref.names(ln) {
			return
		}
		i := bytes.LastIndexByte(ln, ' ')
		ts, err := strconv.ParseInt(string(ln[i+1:]), 10, 64)
		if i < 0 || err != nil {
			return
		}
		g := byTS[ts]
		if g == nil {
			g = &group{}
			byTS[ts] = g
		}
		g.lines++
		g.samples += countSamples(ln)
	})
	keys := make([]int64, 0, len(byTS))
	for ts := range byTS {
		keys = append(keys, ts)
	}
	slices.Sort(keys)
	total := 0
	for _, ts := range keys {
		g := byTS[ts]
		if n <= 0 {
			break
		}
		if g.lines <= n {
			total += g.samples
			n -= g.lines
			continue
		}
		total += int(float64(g.samples)*float64(n)/float64(g.lines) + 0.5)
		n = 0
	}
	return total
}

// takeOutNamed removes from p the lines a 400 names; nothing of p was
// stored, so the rest goes again. It reports false when the answer names
// none of p's lines.
func (s *Sink) takeOutNamed(p *part, ref refusal, msg string) (part, bool) {
	if len(ref.lines) == 0 && len(ref.prefix) < minPrefix {
		return part{}, false
	}
	var rest part
	lines, samples, example := ref.split(p.buf, &rest)
	if lines == 0 {
		return part{}, false
	}
	rest.samples = p.samples - samples
	s.dropRefused(lines, samples, ref.reason, msg, example)
	return rest, true
}

// split counts the lines of buf the answer names (their samples, and the
// first of them), and appends the others to rest when it is given.
func (r *refusal) split(buf []byte, rest *part) (lines, samples int, example string) {
	forLines(buf, func(ln []byte) {
		if r.names(ln) {
			lines++
			samples += countSamples(ln)
			if example == "" {
				example = string(ln)
			}
			return
		}
		if rest != nil {
			rest.buf = append(append(rest.buf, ln...), '\n')
			rest.lines++
		}
	})
	return lines, samples, example
}

// dropRefused counts lines InfluxDB refused, by its reason.
func (s *Sink) dropRefused(lines, samples int, class, msg, example string) {
	s.stats.addDropped(DropRejected, samples)
	s.stats.addRejected(class, samples)
	s.rejects.add(lines, samples, class, msg, example)
}

func forLines(buf []byte, fn func([]byte)) {
	for len(buf) > 0 {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			i = len(buf)
		}
		if i > 0 {
			fn(buf[:i])
		}
		buf = buf[min(i+1, len(buf)):]
	}
}

func firstLine(buf []byte) string {
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		return string(buf[:i])
	}
	return string(buf)
}

// maxRetryAfter caps what a server may ask us to wait.
const maxRetryAfter = 5 * time.Minute

// splitPart cuts p in two at the line boundary nearest its middle.
// splitUpTo splits plain p in halves until no part has more than max
// lines.
func splitUpTo(p part, max int) []part {
	if p.lines <= max || p.lines <= 1 {
		return []part{p}
	}
	a, c := splitPart(p)
	return append(splitUpTo(a, max), splitUpTo(c, max)...)
}

func splitPart(p part) (part, part) {
	half := p.lines / 2
	cut := 0
	for i := 0; i < half; i++ {
		cut += bytes.IndexByte(p.buf[cut:], '\n') + 1
	}
	a := part{buf: p.buf[:cut:cut], lines: half}
	c := part{buf: p.buf[cut:], lines: p.lines - half}
	a.samples = countSamples(a.buf)
	c.samples = p.samples - a.samples
	return a, c
}

// countSamples counts the fields of every line: the unescaped '=' after
// the first unescaped space of each line (values are numbers, so no quoted
// strings can hide one).
func countSamples(buf []byte) int {
	n := 0
	for len(buf) > 0 {
		end := bytes.IndexByte(buf, '\n')
		if end < 0 {
			end = len(buf)
		}
		line := buf[:end]
		inFields := false
		for i := 0; i < len(line); i++ {
			switch line[i] {
			case '\\':
				i++
			case ' ':
				if inFields {
					i = len(line)
				}
				inFields = true
			case '=':
				if inFields {
					n++
				}
			}
		}
		buf = buf[min(end+1, len(buf)):]
	}
	return n
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
