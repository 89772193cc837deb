package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// diskQueue is an append-only queue of batches in segment files under one
// directory, for data InfluxDB has not taken yet. It survives restarts and
// crashes: a record is a header (magic, length, lines, samples, CRC-32 of
// the payload) and the payload; on open every segment is checked, a torn or
// corrupt tail is cut off and counted as lost, and reading resumes at the
// cursor saved after the last acknowledged batch. Delivery is at least
// once: a batch written just before a crash, whose cursor update did not
// reach the disk, is sent again (InfluxDB keeps one point per series and
// timestamp, so a repeat does not duplicate data).
//
// Not safe for concurrent use; the hybrid queue serialises access.
type diskQueue struct {
	dir     string
	segMax  int64
	maxSize int64
	log     *slog.Logger

	segs []*segment // oldest first; the last one is written to
	w    *os.File   // open for appending to the last segment
	r    *os.File   // open for reading the first segment
	rOff int64      // read offset in the first segment
	hdr  [recordHeader]byte

	bytes, samples int64 // queued, records not yet acknowledged (bytes with headers)
	payload        int64 // line protocol bytes queued, without headers
}

type segment struct {
	seq     uint64
	size    int64 // valid bytes (a corrupt tail is excluded)
	records []recordInfo
}

type recordInfo struct {
	off            int64
	size           int64 // header + payload
	lines, samples int
}

const (
	recordMagic  = 0x5346_5131 // "SFQ1"
	recordHeader = 20
	cursorFile   = "cursor"
	segSuffix    = ".seg"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errQueueEmpty is returned by peek when nothing is queued.
var errQueueEmpty = errors.New("queue empty")

// openDiskQueue opens (or creates) the queue in dir. It reports what it
// found and what it had to drop as corrupt.
func openDiskQueue(dir string, maxSize, segMax int64, log *slog.Logger) (*diskQueue, lost, error) {
	var ls lost
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, ls, fmt.Errorf("cannot create queue dir: %w", err)
	}
	q := &diskQueue{dir: dir, segMax: segMax, maxSize: maxSize, log: log}
	names, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		return nil, ls, err
	}
	var seqs []uint64
	for _, n := range names {
		seq, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(n), segSuffix), 10, 64)
		if err == nil {
			seqs = append(seqs, seq)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	curSeq, curOff := q.readCursor()
	for _, seq := range seqs {
		if seq < curSeq {
			os.Remove(q.path(seq))
			continue
		}
		s, l, err := q.scan(seq)
		if err != nil {
			return nil, ls, err
		}
		ls.add(l)
		if seq == curSeq {
			// Records before the cursor were acknowledged.
			for len(s.records) > 0 && s.records[0].off < curOff {
				s.records = s.records[1:]
			}
		}
		q.segs = append(q.segs, s)
	}
	for _, s := range q.segs {
		for _, r := range s.records {
			q.bytes += r.size
			q.payload += r.size - recordHeader
			q.samples += int64(r.samples)
		}
	}
	next := uint64(1)
	if len(q.segs) > 0 {
		next = q.segs[len(q.segs)-1].seq + 1
	}
	// Always append to a fresh segment: the old last one may end in a torn
	// record that was cut off.
	if err := q.newSegment(next); err != nil {
		return nil, ls, err
	}
	if len(q.segs) > 0 && len(q.segs[0].records) > 0 {
		q.rOff = q.segs[0].records[0].off
	}
	return q, ls, nil
}

// lost counts what a corrupt queue file or the size bound cost: line
// protocol bytes (without record headers) and samples.
type lost struct {
	bytes, samples int64
}

func (l *lost) add(o lost) { l.bytes += o.bytes; l.samples += o.samples }

func (q *diskQueue) path(seq uint64) string {
	return filepath.Join(q.dir, fmt.Sprintf("%016d%s", seq, segSuffix))
}

// scan reads a segment, keeping the records that check out. The first bad
// record ends the segment: what follows cannot be trusted to be framed.
func (q *diskQueue) scan(seq uint64) (*segment, lost, error) {
	var ls lost
	data, err := os.ReadFile(q.path(seq))
	if err != nil {
		return nil, ls, fmt.Errorf("cannot read queue segment: %w", err)
	}
	s := &segment{seq: seq}
	off := int64(0)
	for off < int64(len(data)) {
		rest := data[off:]
		if len(rest) < recordHeader || binary.LittleEndian.Uint32(rest) != recordMagic {
			break
		}
		n := int64(binary.LittleEndian.Uint32(rest[4:]))
		lines := int(binary.LittleEndian.Uint32(rest[8:]))
		samples := int(binary.LittleEndian.Uint32(rest[12:]))
		sum := binary.LittleEndian.Uint32(rest[16:])
		if int64(len(rest)) < recordHeader+n {
			ls.samples += int64(samples) // torn write: the header survived
			break
		}
		if crc32.Checksum(rest[recordHeader:recordHeader+n], crcTable) != sum {
			ls.samples += int64(samples)
			break
		}
		s.records = append(s.records, recordInfo{off: off, size: recordHeader + n, lines: lines, samples: samples})
		off += recordHeader + n
	}
	s.size = off
	if off < int64(len(data)) {
		ls.bytes = int64(len(data)) - off
		q.log.Warn("queue segment has a corrupt or torn tail; the good part will be sent, the rest is lost",
			"segment", q.path(seq), "lost_bytes", ls.bytes, "lost_samples_at_least", ls.samples)
	}
	return s, ls, nil
}

func (q *diskQueue) newSegment(seq uint64) error {
	if q.w != nil {
		q.w.Close()
	}
	f, err := os.OpenFile(q.path(seq), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("cannot create queue segment: %w", err)
	}
	q.w = f
	q.segs = append(q.segs, &segment{seq: seq})
	return nil
}

// empty reports whether nothing is queued.
func (q *diskQueue) empty() bool { return q.bytes == 0 }

// append writes b at the end, rotating segments, and returns the batches'
// worth of samples dropped from the head to stay within maxSize.
func (q *diskQueue) append(b *batch) (dropped lost, err error) {
	last := q.segs[len(q.segs)-1]
	if last.size > 0 && last.size+recordHeader+int64(len(b.buf)) > q.segMax {
		if err := q.newSegment(last.seq + 1); err != nil {
			return dropped, err
		}
		last = q.segs[len(q.segs)-1]
	}
	binary.LittleEndian.PutUint32(q.hdr[0:], recordMagic)
	binary.LittleEndian.PutUint32(q.hdr[4:], uint32(len(b.buf)))
	binary.LittleEndian.PutUint32(q.hdr[8:], uint32(b.lines))
	binary.LittleEndian.PutUint32(q.hdr[12:], uint32(b.samples))
	binary.LittleEndian.PutUint32(q.hdr[16:], crc32.Checksum(b.buf, crcTable))
	if _, err := q.w.Write(q.hdr[:]); err != nil {
		return dropped, fmt.Errorf("cannot write queue: %w", err)
	}
	if _, err := q.w.Write(b.buf); err != nil {
		return dropped, fmt.Errorf("cannot write queue: %w", err)
	}
	size := recordHeader + int64(len(b.buf))
	last.records = append(last.records, recordInfo{off: last.size, size: size, lines: b.lines, samples: b.samples})
	last.size += size
	q.bytes += size
	q.payload += int64(len(b.buf))
	q.samples += int64(b.samples)
	// Over the bound: drop whole segments from the head (never the one
	// being written), oldest first.
	for q.bytes > q.maxSize && len(q.segs) > 1 {
		d := q.dropHead()
		dropped.add(d)
	}
	return dropped, nil
}

// dropHead discards the oldest segment.
func (q *diskQueue) dropHead() lost {
	var d lost
	s := q.segs[0]
	for _, r := range s.records {
		q.bytes -= r.size
		d.bytes += r.size - recordHeader
		d.samples += int64(r.samples)
	}
	q.payload -= d.bytes
	q.samples -= d.samples
	if q.r != nil {
		q.r.Close()
		q.r = nil
	}
	os.Remove(q.path(s.seq))
	q.segs = q.segs[1:]
	q.rOff = 0
	if len(q.segs[0].records) > 0 {
		q.rOff = q.segs[0].records[0].off
	}
	q.saveCursor()
	return d
}

// peek reads the oldest batch into buf.
func (q *diskQueue) peek(buf []byte) (*batch, error) {
	for len(q.segs) > 1 && len(q.segs[0].records) == 0 {
		q.dropHead() // fully acknowledged segment
	}
	s := q.segs[0]
	if len(s.records) == 0 {
		return nil, errQueueEmpty
	}
	rec := s.records[0]
	if q.r == nil {
		f, err := os.Open(q.path(s.seq))
		if err != nil {
			return nil, fmt.Errorf("cannot open queue segment: %w", err)
		}
		q.r = f
	}
	n := int(rec.size - recordHeader)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := q.r.ReadAt(buf, rec.off+recordHeader); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("cannot read queue segment: %w", err)
	}
	return &batch{buf: buf, lines: rec.lines, samples: rec.samples}, nil
}

// ack removes the oldest batch and saves the cursor.
func (q *diskQueue) ack() {
	s := q.segs[0]
	rec := s.records[0]
	s.records = s.records[1:]
	q.bytes -= rec.size
	q.payload -= rec.size - recordHeader
	q.samples -= int64(rec.samples)
	q.rOff = rec.off + rec.size
	if len(s.records) == 0 && len(q.segs) > 1 {
		q.dropHead()
		return
	}
	q.saveCursor()
}

// saveCursor records the read position (atomically, by rename).
func (q *diskQueue) saveCursor() {
	if len(q.segs) == 0 {
		return
	}
	tmp := filepath.Join(q.dir, cursorFile+".tmp")
	data := fmt.Sprintf("%d %d\n", q.segs[0].seq, q.rOff)
	if err := os.WriteFile(tmp, []byte(data), 0o640); err == nil {
		_ = os.Rename(tmp, filepath.Join(q.dir, cursorFile))
	}
}

func (q *diskQueue) readCursor() (uint64, int64) {
	data, err := os.ReadFile(filepath.Join(q.dir, cursorFile))
	if err != nil {
		return 0, 0
	}
	f := bytes.Fields(data)
	if len(f) != 2 {
		return 0, 0
	}
	seq, err1 := strconv.ParseUint(string(f[0]), 10, 64)
	off, err2 := strconv.ParseInt(string(f[1]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0
	}
	return seq, off
}

// sync flushes written segments to stable storage.
func (q *diskQueue) sync() error {
	if q.w == nil {
		return nil
	}
	return q.w.Sync()
}

func (q *diskQueue) close() error {
	if q.r != nil {
		q.r.Close()
	}
	if q.w == nil {
		return nil
	}
	err := q.w.Sync()
	if cerr := q.w.Close(); err == nil {
		err = cerr
	}
	q.w = nil
	return err
}
