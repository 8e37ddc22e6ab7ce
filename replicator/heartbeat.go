package replicator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"spoolsync/synclog"
	"spoolsync/wire"
)

// Heartbeat. A replica that stops answering without closing the
// connection (a blackholed link, a hung host, a dropped NAT entry) would
// otherwise look connected for as long as nothing needs an answer from
// it, and an idle channel needs none. So the channel pings it: while idle
// (no event to ship for HeartbeatInterval), and while it waits for an
// answer (an Ack, the answers to an offer: the replica answers a Ping at
// once, even while it applies a batch). Any frame heard from it counts as
// an answer. Nothing heard for HeartbeatTimeout, or a write that cannot
// go out for that long, ends the session with errNoAnswer: the channel is
// then "down: no answer for N s" in status and metrics until a new
// session gets through the handshake.

// Default heartbeat timing: detection within about 20 s, at the cost of a
// few bytes every 5 s on an idle link.
const (
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultHeartbeatTimeout  = 15 * time.Second
)

// errNoAnswer is the session error of a replica that went silent.
type errNoAnswer struct {
	replica string
	silent  time.Duration
}

func (e *errNoAnswer) Error() string {
	return fmt.Sprintf("replica %s: no answer for %.0f s (heartbeat); check the replica host and the network path to it",
		e.replica, e.silent.Seconds())
}

// heartbeatTiming returns the channel's interval and timeout, defaults
// filled in.
func (c *Channel) heartbeatTiming() (interval, timeout time.Duration) {
	interval, timeout = c.cfg.HeartbeatInterval, c.cfg.HeartbeatTimeout
	if interval <= 0 {
		interval = DefaultHeartbeatInterval
	}
	if timeout <= 0 {
		timeout = DefaultHeartbeatTimeout
	}
	return interval, timeout
}

// heardConn records when a frame's bytes last came from the replica, and
// bounds every write by the heartbeat timeout: a peer that stops reading
// fills the socket buffers, and a write would then block for ever.
type heardConn struct {
	net.Conn
	heard   *atomic.Int64 // unix nanoseconds
	timeout time.Duration
}

func (c *heardConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.heard.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *heardConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// watched is a session's connection as ship uses it: its Recv pings the
// replica every interval while it waits, skips the Pongs, and fails with
// errNoAnswer when nothing has come for timeout.
type watched struct {
	*wire.Conn
	c                 *Channel
	interval, timeout time.Duration
	nextID            uint64
}

func (c *Channel) watch(conn *wire.Conn) *watched {
	interval, timeout := c.heartbeatTiming()
	return &watched{Conn: conn, c: c, interval: interval, timeout: timeout}
}

// silence converts a timeout into errNoAnswer; other errors pass.
func (w *watched) silence(err error) error {
	var ne net.Error
	if err == nil || !(errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)) {
		return err
	}
	heard := time.Unix(0, w.c.heard.Load())
	return &errNoAnswer{replica: w.c.cfg.Client.Addr, silent: time.Since(heard)}
}

func (w *watched) Send(m wire.Message) error { return w.silence(w.Conn.Send(m)) }
func (w *watched) Flush() error              { return w.silence(w.Conn.Flush()) }
func (w *watched) SendData(r io.Reader, n int64) error {
	return w.silence(w.Conn.SendData(r, n))
}

func (w *watched) Recv() (wire.Message, error) {
	for {
		stop := w.pingEvery()
		_ = w.Conn.SetReadDeadline(time.Now().Add(w.timeout))
		m, err := w.Conn.Recv()
		stop()
		if err != nil {
			return nil, w.silence(err)
		}
		if _, ok := m.(*wire.Pong); ok {
			continue
		}
		_ = w.Conn.SetReadDeadline(time.Time{})
		return m, nil
	}
}

// pingEvery sends a Ping every interval until the returned stop is
// called; stop waits for a Ping in flight, so that none can land between
// a Put and its Data frames, which the caller sends next.
func (w *watched) pingEvery() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(w.interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				w.nextID++
				if w.Conn.Send(&wire.Ping{ID: w.nextID}) != nil || w.Conn.Flush() != nil {
					return // the Recv waiting sees the connection fail
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// ping is one round trip while the session is idle.
func (w *watched) ping() error {
	w.nextID++
	if err := w.Send(&wire.Ping{ID: w.nextID}); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_ = w.Conn.SetReadDeadline(time.Now().Add(w.timeout))
	m, err := w.Conn.Recv()
	if err != nil {
		return w.silence(err)
	}
	_ = w.Conn.SetReadDeadline(time.Time{})
	if p, ok := m.(*wire.Pong); !ok || p.ID != w.nextID {
		return fmt.Errorf("replica %s answered a Ping with %v", w.c.cfg.Client.Addr, m.Type())
	}
	return nil
}

// next waits for the log's next event, pinging the replica every interval
// meanwhile.
func (w *watched) next(ctx context.Context, r *synclog.Reader) (*synclog.Event, error) {
	for {
		tctx, cancel := context.WithTimeout(ctx, w.interval)
		ev, err := r.Next(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return ev, err
		}
		if err := w.ping(); err != nil {
			return nil, err
		}
	}
}
