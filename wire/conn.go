package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// dataChunk is the largest Data payload SendData writes (smaller if the
// peer's frame limit is): big enough to amortise framing, small enough to
// keep a connection's memory low.
const dataChunk = 256 << 10

// errorWriteTimeout bounds how long a failing end waits to tell the peer
// why, so a peer that stopped reading cannot hold the connection open.
const errorWriteTimeout = 2 * time.Second

// Session describes an established connection.
type Session struct {
	Identity   string // the client's authenticated identity
	Mech       string // the SASL mechanism used
	LocalEpoch uint64 // this end's epoch as sent in the handshake
	PeerEpoch  uint64 // the peer's epoch as received in the handshake
	PeerCaps   uint64 // Greeting caps (client side) or Hello caps (server side)
	Caps       uint64 // caps granted in Welcome
	TLS        bool   // the connection is TLS
	Compressed bool   // zstd applies after Welcome
	Peer       string // peer address
	// MaxBatchOps and MaxBatchBytes are the server's batch limits
	// (Welcome, CapBatchLimits); 0 when none were announced.
	MaxBatchOps, MaxBatchBytes uint64
}

// Conn is an established spoolsync connection, returned by Dial, Client or
// Server after a successful handshake.
//
// One goroutine may send (Send, SendData, Flush) while another receives
// (Recv, RecvData); sending from two goroutines at once must be
// serialised by the caller, since a Put and its Data frames must not be
// interleaved with other frames. Sent frames are buffered: call Flush
// before waiting for an answer.
type Conn struct {
	nc     net.Conn
	server bool
	sess   Session

	rmu    sync.Mutex
	fr     frameReader
	state  recvState
	rerr   error // sticky: the connection is unusable for reading
	closed chan struct{}

	wmu     sync.Mutex
	bw      *bufio.Writer
	w       io.Writer // bw, or zw over bw
	zw      *zstd.Encoder
	wbuf    []byte
	dbuf    []byte
	maxSend int
	werr    error // sticky: the connection is unusable for writing

	closeOnce sync.Once
}

func newConn(nc net.Conn, server bool, maxRecv int) *Conn {
	c := &Conn{nc: nc, server: server, closed: make(chan struct{}), maxSend: MinFrameSize}
	c.fr = frameReader{r: bufio.NewReaderSize(nc, 64<<10), max: maxRecv}
	c.bw = bufio.NewWriterSize(nc, 64<<10)
	c.w = c.bw
	c.state.server = server
	return c
}

// Session returns what the handshake established.
func (c *Conn) Session() Session { return c.sess }

// SetDeadline, SetReadDeadline and SetWriteDeadline set deadlines on the
// underlying connection, as net.Conn's methods.
func (c *Conn) SetDeadline(t time.Time) error      { return c.nc.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.nc.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Close closes the connection without a word to the peer; send Goodbye
// and Flush first for a clean close. A Send or Recv blocked on the
// connection returns an error. (The zstd encoder and decoder run at
// concurrency 1: they hold no goroutines and need no closing.)
func (c *Conn) Close() error {
	err := ErrClosed
	c.closeOnce.Do(func() {
		close(c.closed)
		err = c.nc.Close()
	})
	return err
}

// Send writes m to the send buffer after validating it. An invalid
// message is refused with a *ProtoError and nothing is written; the
// connection stays usable. A write error makes the connection unusable.
func (c *Conn) Send(m Message) error {
	if err := m.validate(); err != nil {
		return fmt.Errorf("send %v: %w", m.Type(), err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.sendLocked(m)
}

func (c *Conn) sendLocked(m Message) error {
	if c.werr != nil {
		return c.werr
	}
	c.wbuf = m.appendPayload(c.wbuf[:0])
	if len(c.wbuf) > c.maxSend {
		return &ProtoError{Code: CodeTooLarge, Msg: fmt.Sprintf("send %v: payload of %d bytes, over the peer's limit %d", m.Type(), len(c.wbuf), c.maxSend)}
	}
	return c.writeFrame(m.Type(), c.wbuf)
}

func (c *Conn) writeFrame(t MsgType, payload []byte) error {
	var hdr [maxHeaderLen]byte
	if _, err := c.w.Write(appendHeader(hdr[:0], t, len(payload))); err != nil {
		return c.writeFailed(t, err)
	}
	if _, err := c.w.Write(payload); err != nil {
		return c.writeFailed(t, err)
	}
	return nil
}

func (c *Conn) writeFailed(t MsgType, err error) error {
	c.werr = fmt.Errorf("write %v frame to %v: %w", t, c.nc.RemoteAddr(), err)
	return c.werr
}

// Flush writes out everything sent so far, ending the current zstd block
// so the peer can decode it.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

func (c *Conn) flushLocked() error {
	if c.werr != nil {
		return c.werr
	}
	if c.zw != nil {
		if err := c.zw.Flush(); err != nil {
			c.werr = fmt.Errorf("flush zstd stream to %v: %w", c.nc.RemoteAddr(), err)
			return c.werr
		}
	}
	if err := c.bw.Flush(); err != nil {
		c.werr = fmt.Errorf("flush to %v: %w", c.nc.RemoteAddr(), err)
		return c.werr
	}
	return nil
}

// SendData sends exactly n bytes read from r as Data frames, to follow a
// Put (ContentInline) or WriteRanges whose DataLen is n. It holds at most
// one chunk in memory. If r ends before n bytes, SendData fails and the
// connection must be closed: the peer is owed bytes that will not come.
func (c *Conn) SendData(r io.Reader, n int64) error {
	chunk := min(c.maxSend, dataChunk)
	if len(c.dbuf) < chunk {
		c.dbuf = make([]byte, chunk)
	}
	for sent := int64(0); sent < n; {
		k := int(min(int64(chunk), n-sent))
		if _, err := io.ReadFull(r, c.dbuf[:k]); err != nil {
			return fmt.Errorf("send data: source ended after %d of %d bytes: %w", sent, n, noEOF(err))
		}
		// Lock per chunk, so that a failing Recv can get an Error frame
		// out in the middle of a multi-gigabyte file.
		c.wmu.Lock()
		err := c.werr
		if err == nil {
			err = c.writeFrame(TypeData, c.dbuf[:k])
		}
		c.wmu.Unlock()
		if err != nil {
			return err
		}
		sent += int64(k)
	}
	return nil
}

// Recv returns the next message. Data frames that follow a Put or
// WriteRanges are returned too (or read them with RecvData). A Ping is
// returned like any message: the caller answers it with a Pong from its
// sending goroutine, never in the middle of a Put's Data. An Error
// frame from the peer is returned as a *ProtoError with Remote set. A
// message that breaks the protocol — malformed, over a limit, out of
// order, a bad path — makes Recv tell the peer in an Error frame, close
// the connection, and return the *ProtoError. After a Goodbye, the next
// Recv returns ErrClosed.
func (c *Conn) Recv() (Message, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.recvLocked()
}

func (c *Conn) recvLocked() (Message, error) {
	if c.rerr != nil {
		return nil, c.rerr
	}
	m, err := c.readMessage()
	if err == nil {
		err = c.state.check(m)
	}
	if err != nil {
		c.rerr = err
		if pe := asProto(err); pe != nil && !pe.Remote {
			c.fail(pe)
		}
		return nil, err
	}
	if _, ok := m.(*Goodbye); ok {
		c.rerr = ErrClosed
	}
	return m, nil
}

// readMessage reads and decodes one frame; an Error frame becomes an error.
func (c *Conn) readMessage() (Message, error) {
	t, p, err := c.fr.next()
	if err != nil {
		select {
		case <-c.closed:
			return nil, ErrClosed
		default:
		}
		if asProto(err) != nil {
			return nil, err
		}
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read from %v: connection closed by peer: %w", c.nc.RemoteAddr(), err)
		}
		return nil, fmt.Errorf("read from %v: %w", c.nc.RemoteAddr(), err)
	}
	m, err := Unmarshal(t, p)
	if err != nil {
		return nil, err
	}
	if e, ok := m.(*Error); ok {
		return nil, e.asError()
	}
	return m, nil
}

// RecvData reads the n content bytes that follow a Put or WriteRanges and
// writes them to w, one frame at a time. An error from w is returned as
// is (wrapped), and leaves the connection positioned mid-stream: close it.
func (c *Conn) RecvData(w io.Writer, n uint64) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for got := uint64(0); got < n; {
		m, err := c.recvLocked()
		if err != nil {
			return err
		}
		d, ok := m.(*Data)
		if !ok {
			err := protoErrf(CodeProtocol, "expected Data (%d of %d bytes received), got %v", got, n, m.Type())
			c.rerr = err
			c.fail(err)
			return err
		}
		if _, err := w.Write(d.Bytes); err != nil {
			c.rerr = fmt.Errorf("recv data: %w", err)
			return c.rerr
		}
		got += uint64(len(d.Bytes))
	}
	return nil
}

// SendError reports err to the peer in an Error frame and closes the
// connection: an Error is always a sender's last frame. err's *ProtoError
// code, Seq and Path are sent when it has one; otherwise CodeInternal. It
// is safe to call while another goroutine sends: the Error frame may then
// cut a Put's Data short, which the peer accepts since an Error ends
// everything.
func (c *Conn) SendError(err error) {
	c.fail(err)
}

// fail sends err to the peer, best effort and bounded in time, and closes.
func (c *Conn) fail(err error) {
	_ = c.nc.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
	c.wmu.Lock()
	if c.werr == nil {
		if c.writeFrame(TypeError, errorFrame(err).appendPayload(nil)) == nil {
			_ = c.flushLocked()
		}
		c.werr = ErrClosed
	}
	c.wmu.Unlock()
	c.Close()
}
