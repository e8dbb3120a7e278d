package zstdcodec

import (
	"encoding/binary"
	"io"

	"github.com/klauspost/compress/zstd"
)

// The stream types below are zstd as an HTTP transport compression
// (Connect's and gRPC's "zstd" encoding), shaped as connect-go's
// Compressor and Decompressor so that connect-go can pool them.

// Decompressor decodes a zstd stream and reports its end after max bytes,
// so a small compressed body cannot make the reader decode more than the
// caller accepts (connect-go fails the call once it has read max bytes).
type Decompressor struct {
	d         *zstd.Decoder
	max, left int64
}

// minWindow is the smallest window a Decompressor accepts, whatever its
// limit: streaming encoders use windows of up to 8 MiB (klauspost's
// default) whatever the size of what they compress.
const minWindow = 16 << 20

// NewDecompressor returns a Decompressor that ends after limit bytes.
// Frames that declare more than limit bytes and minWindow, or a larger
// window, fail at once.
func NewDecompressor(limit int64) *Decompressor {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(uint64(max(limit+1, minWindow))))
	if err != nil {
		panic(err) // only for invalid options
	}
	return &Decompressor{d: d, max: limit}
}

func (r *Decompressor) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.d.Read(p)
	r.left -= int64(n)
	return n, err
}

// Reset starts decoding src.
func (r *Decompressor) Reset(src io.Reader) error {
	r.left = r.max
	return r.d.Reset(src)
}

// Close lets go of the source. The Decompressor stays usable (connect-go
// closes one before it pools it).
func (r *Decompressor) Close() error {
	_ = r.d.Reset(nil)
	return nil
}

// Compressor encodes a stream at zstd's fastest level. Given a skip
// function, it looks at the first bytes written after each Reset: when
// skip says they are already compressed, it writes them in stored (raw)
// blocks instead, which costs one copy.
type Compressor struct {
	enc     *zstd.Encoder
	w       io.Writer
	skip    func([]byte) bool
	started bool
	stored  bool
}

// NewCompressor returns a Compressor; skip may be nil.
func NewCompressor(skip func([]byte) bool) *Compressor {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(err)
	}
	return &Compressor{enc: e, skip: skip}
}

// storedBlock is the largest block of a frame whose window is 128 KiB.
const storedBlock = 128 << 10

func (c *Compressor) Write(p []byte) (int, error) {
	if !c.started {
		c.started = true
		c.stored = c.skip != nil && c.skip(p)
		if c.stored {
			// Frame header: no content size, not single segment, no
			// checksum; window descriptor 2^(10+7) = 128 KiB.
			hdr := append(Magic[:len(Magic):len(Magic)], 0x00, 7<<3)
			if _, err := c.w.Write(hdr); err != nil {
				return 0, err
			}
		} else {
			c.enc.Reset(c.w)
		}
	}
	if !c.stored {
		return c.enc.Write(p)
	}
	var bh [3]byte
	for rest := p; len(rest) > 0; {
		n := min(len(rest), storedBlock)
		putBlockHeader(bh[:], n, false)
		if _, err := c.w.Write(bh[:]); err != nil {
			return len(p) - len(rest), err
		}
		if _, err := c.w.Write(rest[:n]); err != nil {
			return len(p) - len(rest), err
		}
		rest = rest[n:]
	}
	return len(p), nil
}

// putBlockHeader writes a raw block's 3-byte header: last flag, type 0
// (raw), size.
func putBlockHeader(b []byte, size int, last bool) {
	v := uint32(size) << 3
	if last {
		v |= 1
	}
	var w [4]byte
	binary.LittleEndian.PutUint32(w[:], v)
	copy(b, w[:3])
}

// Close ends the frame.
func (c *Compressor) Close() error {
	if !c.started {
		c.started = true
		c.enc.Reset(c.w)
	}
	if c.stored {
		var bh [3]byte
		putBlockHeader(bh[:], 0, true)
		_, err := c.w.Write(bh[:])
		return err
	}
	return c.enc.Close()
}

// Reset starts a new frame written to w.
func (c *Compressor) Reset(w io.Writer) {
	c.w, c.started, c.stored = w, false, false
}
