package zstdcodec_test

import (
	"bytes"
	"errors"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/xcheng85/go-ldm/internal/zstdcodec"
)

// streamFrame compresses src as a streaming encoder does: a frame with a
// window of window bytes (not single-segment) and the content size.
func streamFrame(tb testing.TB, src []byte, window int) []byte {
	tb.Helper()
	var out bytes.Buffer
	e, err := zstd.NewWriter(nil, zstd.WithWindowSize(window), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	if err != nil {
		tb.Fatal(err)
	}
	e.ResetContentSize(&out, int64(len(src)))
	if _, err := e.Write(src); err != nil {
		tb.Fatal(err)
	}
	if err := e.Close(); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

func TestValidate(t *testing.T) {
	src := noisy(512<<10, 7)
	single := zstdcodec.Encode(nil, src, 3)
	stream := streamFrame(t, src, 64<<10)
	t.Run("accepts_frames", func(t *testing.T) {
		for name, f := range map[string][]byte{"single_segment": single, "streaming": stream} {
			if err := zstdcodec.Validate(f, len(src)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		if err := zstdcodec.Validate(zstdcodec.Encode(nil, nil, 3), 0); err != nil {
			t.Errorf("empty frame: %v", err)
		}
	})
	t.Run("refuses", func(t *testing.T) {
		damaged := bytes.Clone(stream)
		damaged[len(damaged)/2] ^= 0xff
		cases := map[string]struct {
			frame []byte
			want  int
		}{
			"wrong_size":          {stream, len(src) - 1},
			"truncated_stream":    {stream[:len(stream)/2], len(src)},
			"truncated_single":    {single[:len(single)/2], len(src)},
			"damaged":             {damaged, len(src)},
			"two_frames":          {append(bytes.Clone(stream), zstdcodec.Encode(nil, []byte("more"), 1)...), len(src)},
			"trailing_garbage":    {append(bytes.Clone(stream), 1, 2, 3, 4, 5, 6, 7, 8), len(src)},
			"no_frame":            {[]byte("not zstd"), 8},
			"negative_size":       {single, -1},
			"single_wrong_header": {single, len(src) + 1},
		}
		for name, tc := range cases {
			if err := zstdcodec.Validate(tc.frame, tc.want); !errors.Is(err, zstdcodec.ErrCorrupt) {
				t.Errorf("%s: %v, want ErrCorrupt", name, err)
			}
		}
	})
	t.Run("memory", func(t *testing.T) {
		for name, tc := range map[string]struct {
			frame []byte
			want  uint64
		}{
			"single_segment": {single, uint64(len(src))},
			"streaming":      {stream, 64<<10 + 2*64<<10 + 4<<10},
		} {
			got, err := zstdcodec.ValidateMemory(tc.frame)
			if err != nil || got != tc.want {
				t.Errorf("%s: ValidateMemory = %d, %v; want %d", name, got, err, tc.want)
			}
		}
	})
}

// TestValidate_keeps_one_window: a frame of 16 MiB of zeros with a 64 KiB
// window (a few KiB sent) is checked without allocating its content.
func TestValidate_keeps_one_window(t *testing.T) {
	const n = 16 << 20
	frame := streamFrame(t, make([]byte, n), 64<<10)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := zstdcodec.Validate(frame, n)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("validating a %d-byte frame that declares %d MiB allocated %d MiB; want about its 64 KiB window", len(frame), n>>20, alloc>>20)
	}
}
