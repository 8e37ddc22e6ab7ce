package replicator

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"spoolsync/guid"
	"spoolsync/synclog"
)

// blackhole is a TCP proxy to a replica that can start dropping every
// byte both ways while keeping the connections open, as a firewall that
// drops packets does: nothing is refused, nothing arrives.
type blackhole struct {
	ln       net.Listener
	to       string
	dropping atomic.Bool
	mu       sync.Mutex
	conns    []net.Conn
}

func newBlackhole(t *testing.T, to string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	b := &blackhole{ln: ln, to: to}
	go b.serve()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.conns {
			c.Close()
		}
	})
	return b
}

func (b *blackhole) addr() string { return b.ln.Addr().String() }

func (b *blackhole) serve() {
	for {
		in, err := b.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", b.to)
		if err != nil {
			in.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, in, out)
		b.mu.Unlock()
		go b.pipe(in, out)
		go b.pipe(out, in)
	}
}

// pipe copies src to dst until either closes, dropping what it reads
// while the proxy drops.
func (b *blackhole) pipe(src, dst net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.dropping.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestHeartbeatSilentReplica: a replica that stops answering without
// closing the connection is reported down ("no answer") in status and in
// the metrics, both when the channel is idle and when it waits for a
// batch's acknowledgement; once it answers again the channel reconnects
// and ships what was logged meanwhile.
func TestHeartbeatSilentReplica(t *testing.T) {
	spool, root, opts := newResyncTest(t)
	proxy := newBlackhole(t, opts.Client.Addr)
	cc := opts.Client
	cc.Addr = proxy.addr()
	cc.HandshakeTimeout = 2 * time.Second
	state := t.TempDir()
	lg, err := synclog.Open(synclog.Options{Dir: filepath.Join(state, "log"), FlushInterval: -1})
	must(t, err)
	t.Cleanup(func() { lg.Close() })
	r, err := New(lg, Options{Backing: spool, StateDir: state, GUIDMode: guid.SHA256, Logger: slog.New(slog.DiscardHandler)},
		[]ChannelConfig{{Name: "default", Client: cc, BatchEvents: 100, BatchBytes: 1 << 20,
			HeartbeatInterval: 200 * time.Millisecond, HeartbeatTimeout: 2 * time.Second}})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		r.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	deliver := func(name string) {
		t.Helper()
		must(t, os.WriteFile(filepath.Join(spool, name), []byte("mail "+name), 0o600))
		seq, err := lg.Append(&synclog.Event{Op: synclog.OpCreate, Path: name})
		must(t, err)
		must(t, lg.Sync(seq))
	}
	waitFor := func(what string, ok func(ChannelStatus) bool) ChannelStatus {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			st := r.Status()[0]
			if ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("status does not show %s after 60 s: %+v", what, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	synced := func(st ChannelStatus) bool { return st.Connected && st.BacklogEvents == 0 }
	silent := func(st ChannelStatus) bool {
		return !st.Connected && st.NoAnswerSeconds > 0 && strings.Contains(st.LastError, "no answer")
	}

	deliver("1")
	waitFor("the first mail shipped", synced)

	// Idle: nothing to ship, so only the heartbeat can notice.
	proxy.dropping.Store(true)
	st := waitFor("the idle, silent replica down", silent)
	checkNoAnswerMetric(t, r, st)

	proxy.dropping.Store(false)
	deliver("2")
	waitFor("the channel back and the mail shipped", synced)

	// Busy: a batch sent, its Ack never comes.
	proxy.dropping.Store(true)
	deliver("3")
	st = waitFor("the silent replica down while a batch waits for its Ack", silent)
	if st.BacklogEvents == 0 {
		t.Errorf("backlog 0 while the replica never acknowledged mail 3: %+v", st)
	}
	proxy.dropping.Store(false)
	waitFor("the channel back and mail 3 shipped", synced)
	for _, name := range []string{"1", "2", "3"} {
		if b, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(b) != "mail "+name {
			t.Errorf("replica's %s: %q %v", name, b, err)
		}
	}
}

// checkNoAnswerMetric: the metrics say what status says.
func checkNoAnswerMetric(t *testing.T, r *Replicator, st ChannelStatus) {
	t.Helper()
	reg := prometheus.NewRegistry()
	must(t, reg.Register(NewCollector(r)))
	mfs, err := reg.Gather()
	must(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	if got["spoolsync_channel_connected"] != 0 || got["spoolsync_channel_no_answer_seconds"] <= 0 {
		t.Errorf("metrics: connected %v, no_answer_seconds %v; want 0 and > 0 (status %+v)",
			got["spoolsync_channel_connected"], got["spoolsync_channel_no_answer_seconds"], st)
	}
}
