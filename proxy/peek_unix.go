//go:build unix

package proxy

import "syscall"

// peek looks at a socket without reading from it and without waiting: is
// anything there, has the peer closed, or neither. (Control, not Read: the
// socket's read deadline, long past on an idle connection, must not apply.)
func peek(raw syscall.RawConn) peekResult {
	var p peeker
	return p.peek(raw, p.look)
}

// peeker holds a peek's result and buffer, so that a connection that keeps
// one (and its bound look method) peeks without allocating.
type peeker struct {
	res peekResult
	b   [1]byte
}

func (p *peeker) peek(raw syscall.RawConn, look func(uintptr)) peekResult {
	p.res = peekNothing
	if err := raw.Control(look); err != nil { // closed on our side
		return peekClosed
	}
	return p.res
}

func (p *peeker) look(fd uintptr) {
	n, _, err := syscall.Recvfrom(int(fd), p.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case n > 0:
		p.res = peekData
	case err == nil: // n == 0: orderly close
		p.res = peekClosed
	case err == syscall.EAGAIN || err == syscall.EINTR:
	default: // reset or another socket error
		p.res = peekClosed
	}
}
