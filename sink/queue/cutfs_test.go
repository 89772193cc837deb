package queue

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// cutFS is a file layer in memory that keeps what was synced apart from
// what was only written, and at cut throws away what was not synced, the
// way LazyFS does for databases: a file's unsynced bytes are lost (or a
// random part of an appended tail survives, maybe damaged), a directory
// entry created or removed since the directory's last sync is undone.
// fail makes writes and syncs fail, as a full or failing disk does.
type cutFS struct {
	mu       sync.Mutex
	names    map[string]*inode // the directory as the running process sees it
	durNames map[string]*inode // the directory as it was last synced
	rng      *rand.Rand
	// failWrite: writes fail with it after writing half their bytes (a
	// full disk takes what fits); failSync: syncs fail with it.
	failWrite, failSync error
	writes              int // successful writes and syncs, for the test's own accounting
}

type inode struct {
	data, durable []byte
}

func newCutFS(seed uint64) *cutFS {
	return &cutFS{names: map[string]*inode{}, durNames: map[string]*inode{}, rng: rand.New(rand.NewPCG(seed, 7))}
}

func (c *cutFS) MkdirAll(string) error { return nil }

func (c *cutFS) OpenFile(name string, flag int) (File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ino := c.names[name]
	if ino == nil {
		if flag&os.O_CREATE == 0 {
			return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
		}
		ino = &inode{}
		c.names[name] = ino
	}
	if flag&os.O_TRUNC != 0 {
		ino.data = nil
	}
	return &cutFile{fs: c, ino: ino, append: flag&os.O_APPEND != 0}, nil
}

func (c *cutFS) ReadFile(name string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ino := c.names[name]
	if ino == nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	}
	return bytes.Clone(ino.data), nil
}

func (c *cutFS) Remove(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.names[name] == nil {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	delete(c.names, name)
	return nil
}

func (c *cutFS) List(dir string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n := range c.names {
		if filepath.Dir(n) == filepath.Clean(dir) {
			out = append(out, filepath.Base(n))
		}
	}
	sort.Strings(out)
	return out, nil
}

func (c *cutFS) SyncDir(string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failSync != nil {
		return c.failSync
	}
	c.durNames = make(map[string]*inode, len(c.names))
	for n, ino := range c.names {
		c.durNames[n] = ino
	}
	return nil
}

func (c *cutFS) Lock(string) (io.Closer, error) { return io.NopCloser(nil), nil }

// cut is the power cut: what survives is what was synced, and of an
// appended tail that was not, a random part, sometimes damaged.
func (c *cutFS) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.names = make(map[string]*inode, len(c.durNames))
	seen := map[*inode]bool{}
	for n, ino := range c.durNames {
		c.names[n] = ino
		if seen[ino] {
			continue
		}
		seen[ino] = true
		switch {
		case bytes.HasPrefix(ino.data, ino.durable) && len(ino.data) > len(ino.durable):
			keep := c.rng.IntN(len(ino.data) - len(ino.durable) + 1)
			tail := bytes.Clone(ino.data[len(ino.durable) : len(ino.durable)+keep])
			if len(tail) > 0 && c.rng.IntN(3) == 0 {
				tail[c.rng.IntN(len(tail))] ^= 0x41
			}
			ino.data = append(bytes.Clone(ino.durable), tail...)
		case bytes.Equal(ino.data, ino.durable):
		default:
			// A rewrite in place (the cursor): one small write, either
			// all of it or none.
			if c.rng.IntN(2) == 0 {
				ino.data = bytes.Clone(ino.durable)
			}
		}
		ino.durable = bytes.Clone(ino.data)
	}
}

type cutFile struct {
	fs     *cutFS
	ino    *inode
	pos    int64
	append bool
}

func (f *cutFile) Write(b []byte) (int, error) {
	if f.append {
		f.fs.mu.Lock()
		f.pos = int64(len(f.ino.data))
		f.fs.mu.Unlock()
	}
	n, err := f.WriteAt(b, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *cutFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	err := f.fs.failWrite
	if err != nil {
		b = b[:len(b)/2]
	} else {
		f.fs.writes++
	}
	if end := off + int64(len(b)); end > int64(len(f.ino.data)) {
		f.ino.data = append(f.ino.data, make([]byte, end-int64(len(f.ino.data)))...)
	}
	copy(f.ino.data[off:], b)
	return len(b), err
}

func (f *cutFile) ReadAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(b, f.ino.data[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (f *cutFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if size <= int64(len(f.ino.data)) {
		f.ino.data = f.ino.data[:size]
	} else {
		f.ino.data = append(f.ino.data, make([]byte, size-int64(len(f.ino.data)))...)
	}
	return nil
}

func (f *cutFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.fs.failSync != nil {
		return f.fs.failSync
	}
	f.ino.durable = bytes.Clone(f.ino.data)
	return nil
}

func (f *cutFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return int64(len(f.ino.data)), nil
}

func (f *cutFile) Close() error { return nil }
