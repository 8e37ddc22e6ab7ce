// Command wirebench is the client side of scripts/bench-wire: it acts as a
// master, ships the real-mail corpus through the wire protocol (TLS, zstd)
// into a running `spoolsync server`, and reports throughput, bytes on the
// wire against payload bytes, and what dedup saves when the same messages
// are sent again under other names (offered, held by the replica, sent by
// GUID).
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"spoolsync/guid"
	"spoolsync/internal/corpus"
	"spoolsync/wire"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2005", "replica address")
	ca := flag.String("ca", "", "CA certificate the replica's certificate is signed by")
	user := flag.String("user", "master", "SASL identity")
	pass := flag.String("password", "", "password")
	level := flag.Int("zstd", 3, "zstd level (0 = no compression)")
	batch := flag.Int("batch", 200, "messages per batch")
	flag.Parse()
	if err := run(*addr, *ca, *user, *pass, *level, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "wirebench:", err)
		os.Exit(1)
	}
}

// countingConn counts the bytes that cross the socket, after TLS and zstd.
type countingConn struct {
	net.Conn
	out, in atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func run(addr, caFile, user, pass string, level, batchSize int) error {
	msgs, err := corpus.Load()
	if err != nil {
		return err
	}
	guids := make([]wire.GUID, len(msgs))
	var payload int64
	for i, m := range msgs {
		g, _, _ := guid.Sum(guid.SHA256, bytes.NewReader(m))
		guids[i] = wire.GUID{Mode: uint8(g.Mode), Sum: g.Sum}
		payload += int64(len(m))
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	nc := &countingConn{Conn: raw}
	c, err := wire.Client(context.Background(), nc, wire.ClientConfig{Addr: addr, AuthName: user, Password: pass, Compress: level,
		TLS: &tls.Config{RootCAs: pool, ServerName: "localhost"}})
	if err != nil {
		return err
	}
	defer c.Close()
	s := c.Session()
	fmt.Printf("corpus: %d messages, %.1f MB; TLS %v, zstd %v (level %d)\n", len(msgs), float64(payload)/1e6, s.TLS, s.Compressed, level)

	seq := uint64(0)
	// Pass 1: every message inline, as new mail.
	out0, in0 := nc.out.Load(), nc.in.Load()
	start := time.Now()
	if err := ship(c, msgs, guids, "new", &seq, batchSize, nil); err != nil {
		return err
	}
	took := time.Since(start)
	wireOut := nc.out.Load() - out0
	fmt.Printf("pass 1 (new mail, inline):  %6.0f messages/s  %6.1f MB/s payload  wire %.1f MB sent / %.1f MB payload = %.3f  (%d bytes received)\n",
		float64(len(msgs))/took.Seconds(), float64(payload)/1e6/took.Seconds(),
		float64(wireOut)/1e6, float64(payload)/1e6, float64(wireOut)/float64(payload), nc.in.Load()-in0)

	// Pass 2: the same messages under other names: offered first; what the
	// replica holds goes by GUID.
	out0, in0 = nc.out.Load(), nc.in.Load()
	start = time.Now()
	lacking := make([]bool, 0, len(msgs))
	for i := 0; i < len(guids); i += wire.MaxOfferGUIDs {
		part := guids[i:min(i+wire.MaxOfferGUIDs, len(guids))]
		if err := c.Send(&wire.Offer{ID: uint64(i), GUIDs: part}); err != nil {
			return err
		}
		if err := c.Flush(); err != nil {
			return err
		}
		m, err := c.Recv()
		if err != nil {
			return err
		}
		lacking = append(lacking, m.(*wire.Lacks).Lacking...)
	}
	if err := ship(c, msgs, guids, "copy", &seq, batchSize, lacking); err != nil {
		return err
	}
	took = time.Since(start)
	wireOut = nc.out.Load() - out0
	held := 0
	for _, l := range lacking {
		if !l {
			held++
		}
	}
	fmt.Printf("pass 2 (same mail, new names, %d/%d held by the replica, sent by GUID):  %6.0f messages/s  wire %.3f MB sent for %.1f MB payload = %.4f  (%d bytes received)\n",
		held, len(msgs), float64(len(msgs))/took.Seconds(), float64(wireOut)/1e6, float64(payload)/1e6, float64(wireOut)/float64(payload), nc.in.Load()-in0)
	c.Send(&wire.Goodbye{Reason: "benchmark done"})
	return c.Flush()
}

// ship sends msgs as Puts under dir/NNNNN, batchSize a batch, waiting for
// each batch's Ack (as the shipper does at its window's end). A message
// whose lacking entry is false goes by GUID.
func ship(c *wire.Conn, msgs [][]byte, guids []wire.GUID, dir string, seq *uint64, batchSize int, lacking []bool) error {
	for i := 0; i < len(msgs); i += batchSize {
		*seq++
		end := min(i+batchSize, len(msgs))
		if err := c.Send(&wire.BatchBegin{Seq: *seq}); err != nil {
			return err
		}
		ops := uint64(2)
		if err := c.Send(&wire.Mkdir{Path: dir, Mode: 0o700}); err != nil {
			return err
		}
		if err := c.Send(&wire.Mkdir{Path: fmt.Sprintf("%s/%03d", dir, i/batchSize), Mode: 0o700}); err != nil {
			return err
		}
		for j := i; j < end; j++ {
			p := &wire.Put{Path: fmt.Sprintf("%s/%03d/%05d", dir, i/batchSize, j), Content: wire.ContentInline, Mode: 0o600,
				Mtime: time.Now().UnixNano(), Size: uint64(len(msgs[j])), GUID: guids[j]}
			if lacking != nil && !lacking[j] {
				p.Content = wire.ContentByGUID
			}
			if err := c.Send(p); err != nil {
				return err
			}
			if p.DataLen() > 0 {
				if err := c.SendData(bytes.NewReader(msgs[j]), int64(len(msgs[j]))); err != nil {
					return err
				}
			}
			ops++
		}
		if err := c.Send(&wire.BatchEnd{Seq: *seq, OpCount: ops}); err != nil {
			return err
		}
		if err := c.Flush(); err != nil {
			return err
		}
		m, err := c.Recv()
		if err != nil {
			return err
		}
		if a, ok := m.(*wire.Ack); !ok || a.Seq != *seq {
			return fmt.Errorf("got %v, want Ack %d", m.Type(), *seq)
		}
	}
	return nil
}
