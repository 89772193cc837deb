//go:build !unix

package queue

import "os"

// lockDir opens the lock file; on systems without flock a second process
// on the same directory is not detected.
func lockDir(path string) (*os.File, error) { return os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640) }

func unlockDir(f *os.File) { f.Close() }
