package remotewrite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tetherfleet/tether/hub/internal/atomicfile"
)

// The queue directory:
//
//	<dir>/segments/00000001 …  append-only, numbered from 1; a record is
//	                           uint32 len(body) | uint32 CRC-32C(body) | body
//	                           body = uint64 seq | uint32 samples | payload
//	                           (seq: number of the record's first sample,
//	                           counted from 0 over the queue's life;
//	                           payload: a snappy-compressed prompb.WriteRequest)
//	<dir>/cursor-<endpoint>    "segment offset seq\n": the first record that
//	                           endpoint has not yet had accepted
//
// A torn record at the end of the last segment (a crash in the middle of
// a write) is cut off on open. Segments every cursor has passed are
// deleted; above the byte quota the oldest segment goes, and the samples
// it held are counted as dropped for each endpoint that had not sent them.
const (
	recordHeader = 8
	bodyHeader   = 12
	// maxRecord bounds one record's body; a bigger length in a header is
	// corruption, not a reason to allocate.
	maxRecord = 64 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Errors of the queue.
var (
	// errCorrupt says a record failed its checks.
	errCorrupt = errors.New("corrupt record")
)

// position is a place in the queue: the record at offset off of segment
// seg, whose first sample has number seq.
type position struct {
	seg int
	off int64
	seq uint64
}

type segment struct {
	n        int
	size     int64
	firstSeq uint64
}

// queue is the durable log the forwarder appends to and each endpoint's
// sender reads with its own cursor.
type queue struct {
	dir      string
	segBytes int64
	maxBytes int64

	mu      sync.Mutex
	f       *os.File // the last segment, open for append
	segs    []segment
	next    uint64        // seq of the next sample appended
	changed chan struct{} // closed and replaced on every append
	closed  bool
}

func openQueue(dir string, segBytes, maxBytes int64) (*queue, error) {
	sdir := filepath.Join(dir, "segments")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		return nil, fmt.Errorf("remote write queue: %w", err)
	}
	q := &queue{dir: dir, segBytes: segBytes, maxBytes: maxBytes, changed: make(chan struct{})}
	ents, err := os.ReadDir(sdir)
	if err != nil {
		return nil, fmt.Errorf("remote write queue: %w", err)
	}
	var nums []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > 0 {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	for i, n := range nums {
		last := i == len(nums)-1
		s, err := q.scanSegment(n, last)
		if err != nil {
			return nil, err
		}
		q.segs = append(q.segs, s)
	}
	// Writing goes on in a new segment when a cursor is at or past the end
	// of the last one on disk: all was sent and released, or a power loss
	// lost a tail some endpoint had already sent. Numbering and sequence
	// then go on from the cursors, so no cursor is ever past the end.
	var cursorSeq uint64
	cursorSeg, lastN := 0, 0
	if len(q.segs) > 0 {
		lastN = q.segs[len(q.segs)-1].n
	}
	fresh := len(q.segs) == 0
	for _, c := range q.cursorFiles() {
		p, err := readCursor(c)
		if err != nil {
			continue
		}
		cursorSeq, cursorSeg = max(cursorSeq, p.seq), max(cursorSeg, p.seg)
		if l := len(q.segs); l > 0 && (p.seg > lastN || p.seg == lastN && p.off > q.segs[l-1].size) {
			fresh = true
		}
	}
	if fresh {
		q.segs = append(q.segs, segment{n: max(lastN, cursorSeg) + 1})
	}
	if l := &q.segs[len(q.segs)-1]; l.size == 0 {
		q.next = max(q.next, cursorSeq)
		l.firstSeq = q.next
	}
	last := q.segs[len(q.segs)-1]
	q.f, err = os.OpenFile(q.segPath(last.n), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("remote write queue: %w", err)
	}
	return q, nil
}

func (q *queue) segPath(n int) string {
	return filepath.Join(q.dir, "segments", fmt.Sprintf("%08d", n))
}

func (q *queue) cursorPath(endpoint string) string {
	return filepath.Join(q.dir, "cursor-"+endpoint)
}

func (q *queue) cursorFiles() []string {
	m, _ := filepath.Glob(filepath.Join(q.dir, "cursor-*"))
	return m
}

// scanSegment reads segment n's records to learn its size and sequence
// numbers. In the last segment a bad tail is cut off; in an earlier one it
// is an error, since nothing should have written there after a rotation.
func (q *queue) scanSegment(n int, last bool) (segment, error) {
	path := q.segPath(n)
	f, err := os.Open(path)
	if err != nil {
		return segment{}, fmt.Errorf("remote write queue: %w", err)
	}
	defer f.Close()
	s := segment{n: n}
	first := true
	for {
		seq, count, _, size, err := readRecord(f, s.size, false)
		if err == io.EOF {
			break
		}
		if err != nil {
			if !last {
				return segment{}, fmt.Errorf("remote write queue: segment %s at offset %d: %w", path, s.size, err)
			}
			if err := os.Truncate(path, s.size); err != nil {
				return segment{}, fmt.Errorf("remote write queue: cut the torn tail of %s at %d: %w", path, s.size, err)
			}
			break
		}
		if first {
			s.firstSeq, first = seq, false
		}
		q.next = seq + uint64(count)
		s.size += size
	}
	if first {
		s.firstSeq = q.next
	}
	return s, nil
}

// readRecord reads the record at off: its first sample's seq, its sample
// count, its payload (only with withPayload) and its size on disk. io.EOF
// means no record starts at off.
func readRecord(r io.ReaderAt, off int64, withPayload bool) (seq uint64, count uint32, payload []byte, size int64, err error) {
	var h [recordHeader + bodyHeader]byte
	n, err := r.ReadAt(h[:], off)
	if n == 0 && err == io.EOF {
		return 0, 0, nil, 0, io.EOF
	}
	if n < len(h) {
		return 0, 0, nil, 0, fmt.Errorf("%w: short header", errCorrupt)
	}
	l := binary.LittleEndian.Uint32(h[0:4])
	if l < bodyHeader || l > maxRecord {
		return 0, 0, nil, 0, fmt.Errorf("%w: length %d", errCorrupt, l)
	}
	body := make([]byte, l)
	if n, err := r.ReadAt(body, off+recordHeader); n < len(body) {
		return 0, 0, nil, 0, fmt.Errorf("%w: short body: %v", errCorrupt, err)
	}
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(h[4:8]) {
		return 0, 0, nil, 0, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	seq = binary.LittleEndian.Uint64(body[0:8])
	count = binary.LittleEndian.Uint32(body[8:12])
	if withPayload {
		payload = body[bodyHeader:]
	}
	return seq, count, payload, recordHeader + int64(l), nil
}

func encodeRecord(seq uint64, count uint32, payload []byte) []byte {
	b := make([]byte, recordHeader+bodyHeader+len(payload))
	binary.LittleEndian.PutUint32(b[0:4], uint32(bodyHeader+len(payload)))
	binary.LittleEndian.PutUint64(b[8:16], seq)
	binary.LittleEndian.PutUint32(b[16:20], count)
	copy(b[20:], payload)
	binary.LittleEndian.PutUint32(b[4:8], crc32.Checksum(b[8:], crcTable))
	return b
}

// append writes one record of count samples, then enforces the quota.
func (q *queue) append(payload []byte, count int) error {
	if len(payload)+bodyHeader > maxRecord {
		return fmt.Errorf("remote write queue: record of %d bytes is above the %d bound", len(payload), maxRecord)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return errors.New("remote write queue: closed")
	}
	last := &q.segs[len(q.segs)-1]
	if last.size > 0 && last.size+int64(len(payload)) > q.segBytes {
		if err := q.rotate(); err != nil {
			return err
		}
		last = &q.segs[len(q.segs)-1]
	}
	rec := encodeRecord(q.next, uint32(count), payload)
	if _, err := q.f.Write(rec); err != nil {
		// A partial write is cut off on the next open; until then the
		// segment is not appended to again.
		_ = q.rotate()
		return fmt.Errorf("remote write queue: write %s: %w", q.f.Name(), err)
	}
	last.size += int64(len(rec))
	q.next += uint64(count)
	q.enforceQuota()
	close(q.changed)
	q.changed = make(chan struct{})
	return nil
}

// rotate syncs and closes the last segment and starts the next.
func (q *queue) rotate() error {
	if err := q.f.Sync(); err != nil {
		return fmt.Errorf("remote write queue: sync %s: %w", q.f.Name(), err)
	}
	_ = q.f.Close()
	n := q.segs[len(q.segs)-1].n + 1
	f, err := os.OpenFile(q.segPath(n), os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("remote write queue: %w", err)
	}
	q.f = f
	q.segs = append(q.segs, segment{n: n, firstSeq: q.next})
	return nil
}

// enforceQuota deletes the oldest segments while the queue is above its
// byte quota, always keeping the one being written.
func (q *queue) enforceQuota() {
	if q.maxBytes <= 0 {
		return
	}
	var total int64
	for _, s := range q.segs {
		total += s.size
	}
	for total > q.maxBytes && len(q.segs) > 1 {
		total -= q.segs[0].size
		_ = os.Remove(q.segPath(q.segs[0].n))
		q.segs = q.segs[1:]
	}
}

// state is what a reader needs of the queue: the segments and the end.
func (q *queue) state() (segs []segment, next uint64, changed <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.segs), q.next, q.changed
}

// end is the position after the last record.
func (q *queue) end() position {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.segs[len(q.segs)-1]
	return position{seg: s.n, off: s.size, seq: q.next}
}

// record is one record read back.
type record struct {
	seq     uint64
	count   uint32
	payload []byte
	next    position // the position after it
}

// read returns records from p on, at most maxSamples samples' worth (at
// least one record if any is there), and the samples lost to the quota
// before p (p then moves to the oldest kept record).
func (q *queue) read(p position, maxSamples int) (recs []record, dropped uint64, err error) {
	segs, _, _ := q.state()
	if p.seg < segs[0].n || (p.seg == segs[0].n && p.seq < segs[0].firstSeq) {
		if segs[0].firstSeq > p.seq {
			dropped = segs[0].firstSeq - p.seq
		}
		p = position{seg: segs[0].n, seq: max(p.seq, segs[0].firstSeq)}
	}
	samples := 0
	for _, s := range segs {
		if s.n < p.seg {
			continue
		}
		if s.n > p.seg {
			p = position{seg: s.n, seq: s.firstSeq}
		}
		if p.off >= s.size {
			continue
		}
		f, err := os.Open(q.segPath(s.n))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				// Pushed out by the quota since state(): the next read
				// counts it.
				return recs, dropped, nil
			}
			return recs, dropped, fmt.Errorf("remote write queue: %w", err)
		}
		for p.off < s.size {
			seq, count, payload, size, err := readRecord(f, p.off, true)
			if err != nil {
				f.Close()
				return recs, dropped, fmt.Errorf("remote write queue: segment %s at offset %d: %w", f.Name(), p.off, err)
			}
			if len(recs) > 0 && samples+int(count) > maxSamples {
				f.Close()
				return recs, dropped, nil
			}
			p.off += size
			p.seq = seq + uint64(count)
			recs = append(recs, record{seq: seq, count: count, payload: payload, next: p})
			samples += int(count)
		}
		f.Close()
	}
	return recs, dropped, nil
}

// release deletes the segments wholly before every cursor in ps (never
// the one being written).
func (q *queue) release(ps []position) {
	if len(ps) == 0 {
		return
	}
	low := ps[0].seg
	for _, p := range ps[1:] {
		low = min(low, p.seg)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.segs) > 1 && q.segs[0].n < low {
		_ = os.Remove(q.segPath(q.segs[0].n))
		q.segs = q.segs[1:]
	}
}

// pendingBytes is the bytes from p to the end.
func (q *queue) pendingBytes(p position) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var n int64
	for _, s := range q.segs {
		switch {
		case s.n > p.seg:
			n += s.size
		case s.n == p.seg:
			n += max(0, s.size-p.off)
		}
	}
	return n
}

func (q *queue) close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	err := q.f.Sync()
	if cerr := q.f.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeCursor(path string, p position) error {
	return atomicfile.WriteFile(path, fmt.Appendf(nil, "%d %d %d\n", p.seg, p.off, p.seq), 0o600)
}

func readCursor(path string) (position, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return position{}, err
	}
	var p position
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return position{}, fmt.Errorf("remote write cursor %s: want \"segment offset seq\", got %q", path, b)
	}
	var e1, e2, e3 error
	p.seg, e1 = strconv.Atoi(f[0])
	p.off, e2 = strconv.ParseInt(f[1], 10, 64)
	p.seq, e3 = strconv.ParseUint(f[2], 10, 64)
	if err := errors.Join(e1, e2, e3); err != nil || p.seg < 1 || p.off < 0 {
		return position{}, fmt.Errorf("remote write cursor %s: bad content %q", path, b)
	}
	return p, nil
}
