package zstdcodec

import (
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// ringSlack is what a streaming decoder holds beyond its window: room for
// two blocks of at most 128 KiB, and the overrun of its copies.
func ringSlack(window uint64) uint64 {
	return 2*min(window, 128<<10) + 4<<10
}

// frameWindow returns the content size and the window the header of frame
// declares (a single-segment frame's window is its content size).
func frameWindow(frame []byte) (content, window uint64, err error) {
	content, err = ContentSize(frame)
	if err != nil {
		return 0, 0, err
	}
	var h zstd.Header
	if err := h.Decode(frame); err != nil {
		return 0, 0, fmt.Errorf("%w: header: %v", ErrCorrupt, err)
	}
	window = h.WindowSize
	if h.SingleSegment || window == 0 {
		window = max(content, zstd.MinWindowSize)
	}
	return content, window, nil
}

// ValidateMemory returns the bytes of output or history that Validate holds
// while it checks frame: its content size, or the window it declares when
// that is smaller (a frame a streaming encoder wrote). It fails as
// ContentSize does.
func ValidateMemory(frame []byte) (uint64, error) {
	content, window, err := frameWindow(frame)
	if err != nil {
		return 0, err
	}
	return min(content, window+ringSlack(window)), nil
}

// Validate checks, as Decode does, that frame is a frame that declares and
// decodes to exactly want bytes, without keeping what it decodes: it holds
// at most ValidateMemory(frame) bytes of output or history. A
// single-segment frame (Encode's, and most one-shot compressors') is
// decoded whole into a buffer it then drops, since its window is its
// content; a frame whose window is smaller is decoded through a streaming
// decoder into a discarding writer, keeping one window.
func Validate(frame []byte, want int) error {
	if want < 0 {
		return fmt.Errorf("%w: negative size %d", ErrCorrupt, want)
	}
	if err := CheckHeader(frame, want); err != nil {
		return err
	}
	content, window, err := frameWindow(frame)
	if err != nil {
		return err
	}
	if content <= window+ringSlack(window) {
		_, err := Decode(nil, frame, want)
		return err
	}
	d, err := zstd.NewReader(bytes.NewReader(frame),
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(window),
		zstd.WithDecoderMaxMemory(content),
	)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	defer d.Close()
	n, err := io.Copy(io.Discard, io.LimitReader(d, int64(want)+1))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if n > int64(want) {
		return fmt.Errorf("%w: the frame decodes to more than %d bytes", ErrCorrupt, want)
	}
	if n < int64(want) {
		return fmt.Errorf("%w: the frame decodes to %d bytes, want %d", ErrCorrupt, n, want)
	}
	return nil
}
