package zstdcodec

import (
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// ErrCorrupt: a frame is malformed, has no content size, or its content
// size is not the size the caller expects.
var ErrCorrupt = errors.New("corrupt zstd frame")

// Magic is the first four bytes of every Zstandard frame.
var Magic = [4]byte{0x28, 0xb5, 0x2f, 0xfd}

// encoders pools encoders by klauspost's level (zstd levels 1..22 map to
// four of them).
var encoders sync.Map // zstd.EncoderLevel -> *sync.Pool of *zstd.Encoder

func encoderPool(level int) *sync.Pool {
	l := zstd.EncoderLevelFromZstd(level)
	if p, ok := encoders.Load(l); ok {
		return p.(*sync.Pool)
	}
	p, _ := encoders.LoadOrStore(l, &sync.Pool{New: func() any {
		e, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(l),
			zstd.WithEncoderConcurrency(1),
			zstd.WithSingleSegment(true),
			zstd.WithZeroFrames(true),
			zstd.WithEncoderCRC(true),
		)
		if err != nil {
			panic(err) // only for invalid options, which are constant here
		}
		return e
	}})
	return p.(*sync.Pool)
}

// MaxEncodedSize is the largest frame Encode writes for n bytes: the
// frame header (at most 14 bytes: magic, descriptor, 8-byte content size),
// a 3-byte header per block of at most 128 KiB stored as it is when it does
// not compress (one empty block for n = 0), and the 4-byte checksum, with
// room to spare (n/256 and 64 bytes). Encode into a dst of this capacity
// never grows it, so a caller can hold a compressed copy's memory to a
// budget before compressing.
func MaxEncodedSize(n int) int {
	if n < 0 {
		n = 0
	}
	return n + n>>8 + 64
}

// Encode appends to dst one frame holding src, compressed at zstd level
// level (1..22; 0 means 3), with the content size in its header.
func Encode(dst, src []byte, level int) []byte {
	if level == 0 {
		level = 3
	}
	p := encoderPool(level)
	e := p.Get().(*zstd.Encoder)
	defer p.Put(e)
	return e.EncodeAll(src, dst)
}

var decoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderLowmem(true),
	)
	if err != nil {
		panic(err)
	}
	return d
}}

// ContentSize returns the content size the header of frame declares. A
// frame without one, or a header that does not parse, gives an error
// wrapping ErrCorrupt.
func ContentSize(frame []byte) (uint64, error) {
	var h zstd.Header
	if err := h.Decode(frame); err != nil {
		return 0, fmt.Errorf("%w: header: %v", ErrCorrupt, err)
	}
	if h.Skippable {
		return 0, fmt.Errorf("%w: a skippable frame holds no data", ErrCorrupt)
	}
	if !h.HasFCS {
		return 0, fmt.Errorf("%w: the frame header has no content size: compress with the content size written (zstd's default for one-shot compression; klauspost: EncodeAll)", ErrCorrupt)
	}
	return h.FrameContentSize, nil
}

// CheckHeader returns an error wrapping ErrCorrupt unless frame starts
// with a frame header that declares a content size of exactly want bytes.
func CheckHeader(frame []byte, want int) error {
	n, err := ContentSize(frame)
	if err != nil {
		return err
	}
	if n != uint64(want) {
		return fmt.Errorf("%w: the frame declares %d bytes of content, want %d", ErrCorrupt, n, want)
	}
	return nil
}

// Decode decodes frame, which must hold exactly want bytes, into dst
// (reused when its capacity is want or more) and returns the bytes. It
// checks the header before it allocates or decodes anything, and never
// lets the output grow past want: a frame that claims or decodes to
// another size, or is damaged, gives an error wrapping ErrCorrupt.
func Decode(dst, frame []byte, want int) ([]byte, error) {
	if want < 0 {
		return nil, fmt.Errorf("%w: negative size %d", ErrCorrupt, want)
	}
	if err := CheckHeader(frame, want); err != nil {
		return nil, err
	}
	if cap(dst) < want {
		dst = make([]byte, 0, want)
	}
	dst = dst[:0:want]
	d := decoders.Get().(*zstd.Decoder)
	out, err := d.DecodeAll(frame, dst)
	decoders.Put(d)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(out) != want {
		return nil, fmt.Errorf("%w: the frame decodes to %d bytes, want %d", ErrCorrupt, len(out), want)
	}
	return out, nil
}
