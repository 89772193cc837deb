//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package scrape

import (
	"errors"
	"net"
	"syscall"
)

// alive reports whether an idle connection can carry the next request: the
// target has neither closed it nor sent anything unasked (a server may
// answer an idle connection with 408 before closing it). One non-blocking
// peek, no data consumed.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read yet: open and quiet. Bytes, an end of file or
		// an error: not fit for a request.
		ok = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
		return true
	})
	return err == nil && ok
}
