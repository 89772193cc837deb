// This file is long on purpose: the record format's writer, reader and
// resynchronising scanner are one idea and are read side by side.

package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// diskLog is the durable half of the queue: an append-only log of records
// (one sealed batch each) in segment files under one directory, and a
// cursor file that says where the oldest record not yet written to
// InfluxDB starts.
//
// A record is a 32-byte header (magic, which also tells whether the
// payload is gzip'd, payload length, lines, samples, samples written to the
// segment before this record, CRC-32C of the payload, CRC-32C of the
// header) and the payload. Opening checks every record: a damaged one is
// skipped and reading resynchronises on the next record that checks out;
// the "samples before" field of that record says exactly how many samples
// the damage cost.
//
// Not safe for concurrent use, except read, which only touches files of
// records the caller holds; the queue serialises the rest.
type diskLog struct {
	fs     FS
	dir    string
	segMax int64
	sync   SyncPolicy
	log    *slog.Logger
	lock   interface{ Close() error }

	segs      []*segment // oldest first; the last one is written to
	w         File       // open for appending to the last segment; nil after a failure to create one
	cur       File       // the cursor file, open for rewriting in place
	curSized  bool       // cur holds nothing past the cursor
	curBuf    [64]byte
	hdr       [recordHeader]byte
	fileBytes int64 // bytes of every segment file: what the directory holds
	nextSeq   uint64
	// dirty: written since the last sync (segment data, cursor).
	dirtySeg, dirtyCur bool
	// counted: damaged stretches (segment, offset) counted as lost by an
	// earlier open, kept in damageFile so a restart does not count them
	// again; found: those of this open.
	counted, found map[stretch]bool
}

type stretch struct {
	seq uint64
	off int64
}

type segment struct {
	seq     uint64
	size    int64  // bytes in the file (a damaged tail included until the file goes)
	live    int    // records neither written to InfluxDB nor dropped
	samples uint64 // samples appended so far: the next record's "before"
}

// diskRecord is a record found or written, with its place.
type diskRecord struct {
	seg            *segment
	off, size      int64 // size: header + payload
	lines, samples int
	v1             bool // written by an earlier version, with a shorter header
	gz             bool // the payload is gzip'd line protocol
}

func (d diskRecord) payload() int64 {
	if d.v1 {
		return d.size - recordHeaderV1
	}
	return d.size - recordHeader
}

const (
	recordMagic    = 0x5346_5132 // "SFQ2"
	recordMagicGz  = 0x5346_5133 // "SFQ3": as SFQ2, the payload gzip'd
	recordMagicV1  = 0x5346_5131 // "SFQ1": written by earlier versions, still read
	recordHeader   = 32
	recordHeaderV1 = 20
	cursorFile     = "cursor"
	damageFile     = "damage"
	lockFileName   = "lock"
	segSuffix      = ".seg"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// segmentSize derives the segment file size from the queue bound: small
// enough that dropping the oldest whole file when the bound is hit costs
// about a sixteenth of the queue, large enough to keep files few.
func segmentSize(bound int64) int64 {
	return min(max(bound/16, 64<<10), 64<<20)
}

// ErrLocked says another process holds the queue directory.
var ErrLocked = errors.New("queue dir is in use by another process")

// openLog opens (or creates) the log in dir, locking it against a second
// process. It returns the records still to send, oldest first, and what
// damage cost.
func openLog(fs FS, dir string, segMax int64, sync SyncPolicy, log *slog.Logger) (*diskLog, []diskRecord, Amount, error) {
	var ls Amount
	if err := fs.MkdirAll(dir); err != nil {
		return nil, nil, ls, fmt.Errorf("cannot create queue dir: %w", err)
	}
	lk, err := fs.Lock(filepath.Join(dir, lockFileName))
	if err != nil {
		return nil, nil, ls, err
	}
	q := &diskLog{fs: fs, dir: dir, segMax: segMax, sync: sync, log: log, lock: lk}
	recs, ls, err := q.load()
	if err != nil {
		q.close()
		return nil, nil, ls, err
	}
	return q, recs, ls, nil
}

func (q *diskLog) load() ([]diskRecord, Amount, error) {
	var ls Amount
	names, err := q.fs.List(q.dir)
	if err != nil {
		return nil, ls, fmt.Errorf("cannot list queue dir: %w", err)
	}
	var seqs []uint64
	for _, n := range names {
		if !strings.HasSuffix(n, segSuffix) {
			continue
		}
		if seq, err := strconv.ParseUint(strings.TrimSuffix(n, segSuffix), 10, 64); err == nil {
			seqs = append(seqs, seq) // List is sorted and the names fixed-width
		}
	}
	curSeq, curOff, curOK := q.readCursor(seqs)
	q.readDamage()
	var recs []diskRecord
	next := curSeq + 1
	removed := false
	for _, seq := range seqs {
		next = max(next, seq+1)
		if curOK && seq < curSeq {
			// Written to InfluxDB before the cursor moved on.
			removed = q.fs.Remove(q.path(seq)) == nil || removed
			continue
		}
		from := int64(0)
		if curOK && seq == curSeq {
			from = curOff
		}
		s, found, l, err := q.scan(seq, from)
		if err != nil {
			return nil, ls, err
		}
		ls.add(l)
		skip := 0
		if from > 0 {
			for skip < len(found) && found[skip].off < curOff {
				skip++
			}
			if skip < len(found) && curOff != found[skip].off && curOff < s.size {
				q.log.Warn("queue cursor does not point at a record; sending the whole segment again (InfluxDB keeps one point per series and time, so nothing doubles)",
					"segment", q.path(seq), "cursor", curOff)
				skip = 0
			}
		}
		found = found[skip:]
		s.live = len(found)
		if s.live == 0 {
			removed = q.fs.Remove(q.path(seq)) == nil || removed
			continue
		}
		q.segs = append(q.segs, s)
		q.fileBytes += s.size
		recs = append(recs, found...)
	}
	q.writeDamage()
	if removed {
		q.syncDir()
	}
	// Always append to a fresh segment: the old last one may end in a torn
	// record that was cut off.
	if err := q.newSegment(next); err != nil {
		return nil, ls, err
	}
	return recs, ls, nil
}

// Amount is an amount of queued data, found, lost or dropped: line
// protocol bytes (without record headers) and samples.
type Amount struct {
	Bytes, Samples int64
}

func (l *Amount) add(o Amount) { l.Bytes += o.Bytes; l.Samples += o.Samples }

// IsZero reports whether the amount is nothing.
func (l Amount) IsZero() bool { return l.Bytes == 0 && l.Samples == 0 }

func (q *diskLog) path(seq uint64) string {
	return filepath.Join(q.dir, fmt.Sprintf("%016d%s", seq, segSuffix))
}

// header is a parsed record header.
type header struct {
	size           int64 // header + payload
	hdrLen         int64
	lines, samples int
	before         uint64
	sum            uint32
	v1, gz         bool
}

// parseHeader reads a header at the start of b, checking its own checksum.
func parseHeader(b []byte) (header, bool) {
	var magic uint32
	if len(b) >= 4 {
		magic = binary.LittleEndian.Uint32(b)
	}
	switch {
	case len(b) >= recordHeader && (magic == recordMagic || magic == recordMagicGz):
		if crc32.Checksum(b[:recordHeader-4], crcTable) != binary.LittleEndian.Uint32(b[28:]) {
			return header{}, false
		}
		n := int64(binary.LittleEndian.Uint32(b[4:]))
		return header{
			size: recordHeader + n, hdrLen: recordHeader,
			lines:   int(binary.LittleEndian.Uint32(b[8:])),
			samples: int(binary.LittleEndian.Uint32(b[12:])),
			before:  binary.LittleEndian.Uint64(b[16:]),
			sum:     binary.LittleEndian.Uint32(b[24:]),
			gz:      magic == recordMagicGz,
		}, true
	case len(b) >= recordHeaderV1 && magic == recordMagicV1:
		n := int64(binary.LittleEndian.Uint32(b[4:]))
		return header{
			size: recordHeaderV1 + n, hdrLen: recordHeaderV1, v1: true,
			lines:   int(binary.LittleEndian.Uint32(b[8:])),
			samples: int(binary.LittleEndian.Uint32(b[12:])),
			sum:     binary.LittleEndian.Uint32(b[16:]),
		}, true
	}
	return header{}, false
}

// recordAt reports whether a whole, intact record starts at data[off:].
func recordAt(data []byte, off int64) (header, bool) {
	h, ok := parseHeader(data[off:])
	if !ok || h.size > int64(len(data))-off {
		return h, false
	}
	return h, crc32.Checksum(data[off+h.hdrLen:off+h.size], crcTable) == h.sum
}

// nextRecord finds the first offset after off where an intact record
// starts, or -1.
func nextRecord(data []byte, off int64) int64 {
	for p := off + 1; p+3 < int64(len(data)); {
		// The magic is little-endian: "2QFS" (or "3QFS", "1QFS") in file order.
		i := bytes.Index(data[p+1:], []byte("QFS"))
		if i < 0 {
			return -1
		}
		start := p + int64(i)
		if _, ok := recordAt(data, start); ok {
			return start
		}
		p = start + 1
	}
	return -1
}

// scan reads a segment and returns the records that check out. A damaged
// record is skipped and reading resumes at the next intact one; what was
// skipped is counted exactly where a later record tells how many samples
// came before it, and from the damaged header otherwise. Damage that ends
// before from (the cursor: records already written to InfluxDB) costs
// nothing and is not counted.
func (q *diskLog) scan(seq uint64, from int64) (*segment, []diskRecord, Amount, error) {
	var ls Amount
	data, err := q.fs.ReadFile(q.path(seq))
	if err != nil {
		return nil, nil, ls, fmt.Errorf("cannot read queue segment: %w", err)
	}
	s := &segment{seq: seq, size: int64(len(data))}
	var recs []diskRecord
	var expect uint64 // samples the records so far account for
	damaged := 0
	var known bool // the stretch being skipped was counted by an earlier open
	for off := int64(0); off < int64(len(data)); {
		h, ok := recordAt(data, off)
		if ok {
			if !h.v1 && h.before > expect && off > from && !known {
				ls.Samples += int64(h.before - expect) // records lost in a damaged stretch
			}
			known = false
			if !h.v1 {
				expect = h.before
			}
			expect += uint64(h.samples)
			recs = append(recs, diskRecord{seg: s, off: off, size: h.size, lines: h.lines, samples: h.samples, v1: h.v1, gz: h.gz})
			off += h.size
			continue
		}
		next := nextRecord(data, off)
		st := stretch{seq, off}
		q.found[st] = true
		if known = q.counted[st]; known {
			off = next
			if next < 0 {
				break
			}
			continue
		}
		if next < 0 {
			// A damaged or torn tail. Its header, if intact, says what it held.
			if off >= from {
				damaged++
				if hh, hok := parseHeader(data[off:]); hok {
					ls.Samples += int64(hh.samples)
				}
				ls.Bytes += int64(len(data)) - off
			}
			break
		}
		if next > from {
			damaged++
			ls.Bytes += next - off
		}
		off = next
	}
	s.samples = expect
	if damaged > 0 {
		q.log.Error("queue segment is damaged: skipped the damaged bytes and kept every intact record",
			"segment", q.path(seq), "damaged_stretches", damaged, "lost_bytes", ls.Bytes,
			"lost_samples", ls.Samples, "records_kept", len(recs))
	}
	return s, recs, ls, nil
}

// readDamage reads the stretches earlier opens counted.
func (q *diskLog) readDamage() {
	q.counted, q.found = map[stretch]bool{}, map[stretch]bool{}
	data, err := q.fs.ReadFile(filepath.Join(q.dir, damageFile))
	if err != nil {
		return
	}
	for _, ln := range strings.Split(string(data), "\n") {
		var st stretch
		if _, err := fmt.Sscanf(ln, "%d %d", &st.seq, &st.off); err == nil {
			q.counted[st] = true
		}
	}
}

// writeDamage records the stretches of the segments kept, so they are
// counted once. A failure costs a second count after a restart, no data.
func (q *diskLog) writeDamage() {
	if maps.Equal(q.found, q.counted) {
		return
	}
	var b []byte
	for st := range q.found {
		b = fmt.Appendf(b, "%d %d\n", st.seq, st.off)
	}
	name := filepath.Join(q.dir, damageFile)
	f, err := q.fs.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC)
	if err != nil {
		return
	}
	if _, err := f.Write(b); err == nil {
		_ = f.Sync()
	}
	f.Close()
	if len(q.found) == 0 {
		_ = q.fs.Remove(name)
	}
	_ = q.fs.SyncDir(q.dir)
}

// newSegment starts segment seq and makes it the one written to. The
// segment before it is synced first (unless the policy is never), and the
// new file's directory entry is made durable before a record goes in it.
func (q *diskLog) newSegment(seq uint64) error {
	if q.w != nil {
		if q.sync != SyncNever && q.dirtySeg {
			if err := q.w.Sync(); err != nil {
				return fmt.Errorf("cannot sync queue segment: %w", err)
			}
			q.dirtySeg = false
		}
		q.w.Close()
		q.w = nil
	}
	// O_APPEND: after a failed write is cut off, the next one lands at
	// the new end, not at the old offset past a hole.
	f, err := q.fs.OpenFile(q.path(seq), os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND)
	if err != nil {
		return fmt.Errorf("cannot create queue segment: %w", err)
	}
	if q.sync != SyncNever {
		if err := q.fs.SyncDir(q.dir); err != nil {
			f.Close()
			q.fs.Remove(q.path(seq))
			return fmt.Errorf("cannot sync queue dir: %w", err)
		}
	}
	q.w = f
	q.segs = append(q.segs, &segment{seq: seq})
	q.nextSeq = seq + 1
	return nil
}

func (q *diskLog) active() *segment { return q.segs[len(q.segs)-1] }

// append writes a record for buf (gzip'd when gz) at the end, rotating
// segments. A failed write is cut off again, so a partly written record
// never has a good one appended behind it.
func (q *diskLog) append(buf []byte, lines, samples int, gz bool) (diskRecord, error) {
	size := recordHeader + int64(len(buf))
	if q.w == nil {
		if err := q.newSegment(q.nextSeq); err != nil {
			return diskRecord{}, err
		}
	}
	last := q.active()
	if last.size > 0 && last.size+size > q.segMax {
		if err := q.newSegment(last.seq + 1); err != nil {
			return diskRecord{}, err
		}
		q.dropIfDone(last)
		last = q.active()
	}
	h := q.hdr[:]
	magic := uint32(recordMagic)
	if gz {
		magic = recordMagicGz
	}
	binary.LittleEndian.PutUint32(h[0:], magic)
	binary.LittleEndian.PutUint32(h[4:], uint32(len(buf)))
	binary.LittleEndian.PutUint32(h[8:], uint32(lines))
	binary.LittleEndian.PutUint32(h[12:], uint32(samples))
	binary.LittleEndian.PutUint64(h[16:], last.samples)
	binary.LittleEndian.PutUint32(h[24:], crc32.Checksum(buf, crcTable))
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], crcTable))
	if _, err := q.w.Write(h); err != nil {
		return diskRecord{}, q.writeFailed(last, err)
	}
	if _, err := q.w.Write(buf); err != nil {
		return diskRecord{}, q.writeFailed(last, err)
	}
	if q.sync == SyncAlways {
		if err := q.w.Sync(); err != nil {
			// Written but maybe not durable: the record stays in memory.
			return diskRecord{}, q.writeFailed(last, fmt.Errorf("cannot sync: %w", err))
		}
	} else {
		q.dirtySeg = true
	}
	r := diskRecord{seg: last, off: last.size, size: size, lines: lines, samples: samples, gz: gz}
	last.size += size
	last.samples += uint64(samples)
	last.live++
	q.fileBytes += size
	return r, nil
}

// writeFailed cuts a failed record off the end of s. When that fails too,
// the segment is closed and the next append starts a new one.
func (q *diskLog) writeFailed(s *segment, err error) error {
	if terr := q.w.Truncate(s.size); terr != nil {
		if n, serr := q.w.Size(); serr == nil {
			q.fileBytes += n - s.size
			s.size = n
		}
		q.w.Close()
		q.w = nil
		q.dropIfDone(s)
	}
	return fmt.Errorf("cannot write to the queue: %w", err)
}

// read returns the payload of r, read into buf's spare room. It touches
// only r's file, which stays while r is live, so it may run without the
// queue's lock.
func (q *diskLog) read(r diskRecord, buf []byte) ([]byte, error) {
	f, err := q.fs.OpenFile(q.path(r.seg.seq), os.O_RDONLY)
	if err != nil {
		return buf, fmt.Errorf("cannot open queue segment: %w", err)
	}
	defer f.Close()
	hdr := make([]byte, recordHeader)
	n, _ := f.ReadAt(hdr, r.off)
	h, ok := parseHeader(hdr[:n])
	if !ok || h.size != r.size {
		return buf, fmt.Errorf("queue segment %s changed under its record at %d", q.path(r.seg.seq), r.off)
	}
	start := len(buf)
	buf = append(buf, make([]byte, r.size-h.hdrLen)...)
	if _, err := f.ReadAt(buf[start:], r.off+h.hdrLen); err != nil {
		return buf[:start], fmt.Errorf("cannot read queue segment: %w", err)
	}
	if crc32.Checksum(buf[start:], crcTable) != h.sum {
		return buf[:start], fmt.Errorf("queue record at %s:%d is damaged", q.path(r.seg.seq), r.off)
	}
	return buf, nil
}

// release marks r written or dropped; a segment file goes once none of
// its records is live.
func (q *diskLog) release(r diskRecord) {
	r.seg.live--
	q.dropIfDone(r.seg)
}

func (q *diskLog) dropIfDone(s *segment) {
	if s.live > 0 || (s == q.active() && q.w != nil) {
		return
	}
	for i, o := range q.segs {
		if o == s {
			q.segs = append(q.segs[:i], q.segs[i+1:]...)
			break
		}
	}
	q.fileBytes -= s.size
	if q.fs.Remove(q.path(s.seq)) == nil {
		q.syncDir()
	}
}

// syncDir makes removals durable; a failure costs only a file that comes
// back after a power cut holding records the cursor has passed.
func (q *diskLog) syncDir() {
	if q.sync != SyncNever {
		_ = q.fs.SyncDir(q.dir)
	}
}

// drained is called when nothing is queued: a large active segment that
// holds only written data is replaced by a fresh one, so a drained queue
// leaves little on disk.
func (q *diskLog) drained() {
	if q.w == nil {
		return
	}
	last := q.active()
	if last.live == 0 && last.size >= min(q.segMax/4, 1<<20) {
		if err := q.newSegment(last.seq + 1); err == nil {
			q.dropIfDone(last)
		}
	}
}

// saveCursor records where the oldest unwritten record is. Without one,
// the position is the end of the active segment. The cursor is rewritten
// in place, fixed width, with one write: a process that dies cannot leave
// half of it; after a power cut the last synced cursor is read (a torn
// one is ignored and the whole queue sent again), which at worst sends
// written records again, never skips one.
func (q *diskLog) saveCursor(first *diskRecord) error {
	var seq uint64
	var off int64
	switch {
	case first != nil:
		seq, off = first.seg.seq, first.off
	case q.w != nil:
		seq, off = q.active().seq, q.active().size
	default:
		return nil
	}
	if q.cur == nil {
		f, err := q.fs.OpenFile(filepath.Join(q.dir, cursorFile), os.O_RDWR|os.O_CREATE)
		if err != nil {
			return fmt.Errorf("cannot open queue cursor: %w", err)
		}
		q.cur = f
	}
	b := fmt.Appendf(q.curBuf[:0], "%020d %020d\n", seq, off)
	if _, err := q.cur.WriteAt(b, 0); err != nil {
		return fmt.Errorf("cannot write queue cursor: %w", err)
	}
	if !q.curSized {
		// Whatever the file held before (an earlier version's cursor, a
		// damaged one) must not trail this one.
		q.curSized = q.cur.Truncate(int64(len(b))) == nil
	}
	q.dirtyCur = true
	if q.sync == SyncAlways {
		return q.syncFiles()
	}
	return nil
}

// syncFiles makes the records appended and the cursor saved so far
// durable: the segment first, so a durable cursor never points past
// durable records.
func (q *diskLog) syncFiles() error {
	if q.dirtySeg && q.w != nil {
		if err := q.w.Sync(); err != nil {
			return fmt.Errorf("cannot sync queue segment: %w", err)
		}
	}
	q.dirtySeg = false
	if q.dirtyCur && q.cur != nil {
		if err := q.cur.Sync(); err != nil {
			return fmt.Errorf("cannot sync queue cursor: %w", err)
		}
	}
	q.dirtyCur = false
	return nil
}

// readCursor reads the cursor. A missing one means nothing was written
// yet; a damaged one, or one past every segment, is reported and ignored:
// the whole queue is sent again rather than lost.
func (q *diskLog) readCursor(seqs []uint64) (uint64, int64, bool) {
	data, err := q.fs.ReadFile(filepath.Join(q.dir, cursorFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, false
	}
	var seq uint64
	var off int64
	f := bytes.Fields(data)
	if err == nil && len(f) == 2 {
		var e1, e2 error
		seq, e1 = strconv.ParseUint(string(f[0]), 10, 64)
		off, e2 = strconv.ParseInt(string(f[1]), 10, 64)
		if e1 != nil || e2 != nil || off < 0 {
			err = errors.New("not two numbers")
		}
	} else if err == nil {
		err = errors.New("not two numbers")
	}
	if err != nil {
		q.log.Warn("queue cursor file is unreadable; sending the whole queue again (InfluxDB keeps one point per series and time, so nothing doubles)",
			"file", filepath.Join(q.dir, cursorFile), "err", err)
		return 0, 0, false
	}
	if len(seqs) > 0 && seq > seqs[len(seqs)-1]+1 {
		q.log.Warn("queue cursor points past every segment; sending the whole queue again (InfluxDB keeps one point per series and time, so nothing doubles)",
			"file", filepath.Join(q.dir, cursorFile), "cursor_segment", seq, "last_segment", seqs[len(seqs)-1])
		return 0, 0, false
	}
	return seq, off, true
}

func (q *diskLog) close() error {
	var err error
	if q.w != nil {
		err = q.w.Sync()
		if cerr := q.w.Close(); err == nil {
			err = cerr
		}
		q.w = nil
	}
	if q.cur != nil {
		if serr := q.cur.Sync(); err == nil {
			err = serr
		}
		q.cur.Close()
		q.cur = nil
	}
	// Whatever the policy, a closed queue's files are all durable; with
	// never, segments before the active one were not synced when rolled.
	if q.sync == SyncNever {
		for _, sg := range q.segs {
			if f, oerr := q.fs.OpenFile(q.path(sg.seq), os.O_RDWR); oerr == nil {
				if serr := f.Sync(); err == nil {
					err = serr
				}
				f.Close()
			}
		}
	}
	if serr := q.fs.SyncDir(q.dir); err == nil {
		err = serr
	}
	if q.lock != nil {
		q.lock.Close()
		q.lock = nil
	}
	return err
}
