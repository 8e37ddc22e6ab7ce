package wire

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// mailContent returns n bytes that look like a mail: header lines and a
// base64 attachment, so zstd has a realistic job (neither zeros nor noise).
func mailContent(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for i := 0; b.Len() < n/4; i++ {
		fmt.Fprintf(&b, "Received: from mx%d.example.org (mx%d.example.org [192.0.2.%d]) by imap.example.org with ESMTPS id %08x\r\n", i%7, i%7, i%250, r.Uint32())
	}
	raw := make([]byte, n)
	for i := range raw {
		raw[i] = byte(r.IntN(64)) // half-entropy bytes, like a typical attachment
	}
	enc := base64.StdEncoding.EncodeToString(raw)
	for b.Len() < n {
		k := min(76, len(enc))
		b.WriteString(enc[:k])
		b.WriteString("\r\n")
		enc = enc[k:]
	}
	return b.Bytes()[:n]
}

// BenchmarkPut64K measures a Put with 64 KiB of content through both ends
// of a connection over net.Pipe, as one op per batch, flushed every 16.
func BenchmarkPut64K(b *testing.B) {
	content := mailContent(64 << 10)
	for _, level := range []int{0, 1, 3} {
		name := "plain"
		if level > 0 {
			name = fmt.Sprintf("zstd%d", level)
		}
		b.Run(name, func(b *testing.B) {
			ccfg := baseClientConfig()
			ccfg.Compress = level
			scfg := baseServerConfig()
			scfg.Compress = level
			c, s := pipePair(b, ccfg, scfg)
			done := make(chan error, 1)
			go func() {
				for {
					m, err := s.Recv()
					if err != nil {
						done <- err
						return
					}
					switch m := m.(type) {
					case *Put:
						if err := s.RecvData(io.Discard, m.DataLen()); err != nil {
							done <- err
							return
						}
					case *Goodbye:
						done <- nil
						return
					}
				}
			}()
			b.SetBytes(int64(len(content)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				seq := uint64(i + 1)
				put := &Put{Path: "user/bob/cur/1.eml", Content: ContentInline, Mode: 0o600, Size: uint64(len(content))}
				if err := c.Send(&BatchBegin{Seq: seq}); err != nil {
					b.Fatal(err)
				}
				if err := c.Send(put); err != nil {
					b.Fatal(err)
				}
				if err := c.SendData(bytes.NewReader(content), int64(len(content))); err != nil {
					b.Fatal(err)
				}
				if err := c.Send(&BatchEnd{Seq: seq, OpCount: 1}); err != nil {
					b.Fatal(err)
				}
				if i%16 == 15 {
					if err := c.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := c.Send(&Goodbye{}); err != nil {
				b.Fatal(err)
			}
			if err := c.Flush(); err != nil {
				b.Fatal(err)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkCodecPut measures encoding and decoding alone, with buffers
// reused as a Conn reuses them: a Put frame and its 64 KiB Data frame into
// memory and back.
func BenchmarkCodecPut(b *testing.B) {
	content := mailContent(64 << 10)
	put := &Put{Path: "user/bob/cur/1.eml", Content: ContentInline, Mode: 0o600, Size: uint64(len(content))}
	data := &Data{Bytes: content}
	var buf, p []byte
	src := bytes.NewReader(nil)
	fr := frameReader{r: bufio.NewReaderSize(src, 64<<10), max: DefaultMaxFrameSize}
	b.SetBytes(int64(len(content)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = buf[:0]
		for _, m := range []Message{put, data} {
			p = m.appendPayload(p[:0])
			buf = append(appendHeader(buf, m.Type(), len(p)), p...)
		}
		src.Reset(buf)
		fr.r.Reset(src)
		for j := 0; j < 2; j++ {
			t, p, err := fr.next()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Unmarshal(t, p); err != nil {
				b.Fatal(err)
			}
		}
	}
}
