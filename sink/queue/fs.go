package queue

import (
	"io"
	"os"
	"sort"
)

// FS is the file layer under the queue. The operating system's is the
// default; tests put one under it that keeps unsynced writes apart and
// throws them away at a simulated power cut.
//
// Names are full paths. Only what the queue needs is here: it appends to
// segment files, rewrites the cursor in place, reads records back with
// ReadAt and removes whole files.
type FS interface {
	MkdirAll(dir string) error
	// OpenFile opens name with os.OpenFile's flags.
	OpenFile(name string, flag int) (File, error)
	ReadFile(name string) ([]byte, error)
	Remove(name string) error
	// List returns the names (not paths) in dir, sorted.
	List(dir string) ([]string, error)
	// SyncDir makes dir's entries (files created, removed) durable.
	SyncDir(dir string) error
	// Lock takes dir's lock file against a second process.
	Lock(name string) (io.Closer, error)
}

// File is an open file of an FS.
type File interface {
	io.Writer
	io.WriterAt
	io.ReaderAt
	io.Closer
	Truncate(size int64) error
	// Sync makes what was written durable.
	Sync() error
	Size() (int64, error)
}

// OS is the operating system's file layer.
type OS struct{}

func (OS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o750) }

func (OS) OpenFile(name string, flag int) (File, error) {
	f, err := os.OpenFile(name, flag, 0o640)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (OS) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }
func (OS) Remove(name string) error             { return os.Remove(name) }

func (OS) List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

func (OS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (OS) Lock(name string) (io.Closer, error) {
	f, err := lockDir(name)
	if err != nil {
		return nil, err
	}
	return lockFile{f}, nil
}

type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

type lockFile struct{ f *os.File }

func (l lockFile) Close() error { unlockDir(l.f); return nil }
