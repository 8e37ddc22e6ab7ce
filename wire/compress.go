package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// zstd stream limits. A sender must not use a window over ZstdMaxWindow;
// a receiver refuses a stream that asks for more, so a hostile stream can
// make it hold at most a window, never "the whole decompressed thing".
// The decompressed bytes are frames like any others, held to the frame
// size limit.
const (
	ZstdMaxWindow        = 8 << 20
	zstdMaxMemory        = 64 << 20
	zstdEncoderWindow    = 4 << 20
	DefaultCompressLevel = 3
)

// startCompression switches both directions of c to zstd. It runs right
// after the Welcome frame went out (server) or came in (client); nothing
// else is in flight then, since the client sends nothing between Hello and
// Welcome.
func (c *Conn) startCompression(level int) error {
	if level <= 0 {
		level = DefaultCompressLevel
	}
	enc, err := zstd.NewWriter(c.bw,
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(zstdEncoderWindow))
	if err != nil {
		return fmt.Errorf("start zstd encoder: %w", err)
	}
	src := &trackedReader{r: c.fr.r}
	dec, err := zstd.NewReader(src,
		// One goroutine-free decoder per connection; concurrency would
		// read ahead of what the peer has flushed and buys nothing here.
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(ZstdMaxWindow),
		zstd.WithDecoderMaxMemory(zstdMaxMemory),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		enc.Close()
		return fmt.Errorf("start zstd decoder: %w", err)
	}
	c.zw, c.w = enc, enc
	c.fr.r = bufio.NewReaderSize(&zstdErrReader{dec: dec, src: src}, 64<<10)
	c.sess.Compressed = true
	return nil
}

// trackedReader remembers the last error of the transport under the zstd
// decoder, so the decoder's own errors can be told apart from it.
type trackedReader struct {
	r   io.Reader
	err error
}

func (t *trackedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil {
		t.err = err
	}
	return n, err
}

// zstdErrReader turns errors the decoder raises about the stream itself
// (corrupt data, window or memory over the limit) into protocol errors
// the Conn reports to the peer; transport errors pass through.
type zstdErrReader struct {
	dec *zstd.Decoder
	src *trackedReader
}

func (z *zstdErrReader) Read(p []byte) (int, error) {
	n, err := z.dec.Read(p)
	if err == nil || err == io.EOF || (z.src.err != nil && errors.Is(err, z.src.err)) {
		return n, err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) && z.src.err != nil {
		return n, err
	}
	code := CodeProtocol
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		code = CodeTooLarge
	}
	return n, &ProtoError{Code: code, Msg: fmt.Sprintf("zstd stream refused: %v", err)}
}
