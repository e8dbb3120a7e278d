package zstdcodec_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/xcheng85/go-ldm/internal/zstdcodec"
)

func noisy(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/64) + byte(r.IntN(4))
	}
	return b
}

func TestEncode_round_trip(t *testing.T) {
	for _, level := range []int{0, 1, 3, 9, 19, 22} {
		for _, n := range []int{1, 100, 4096, 64 * 64 * 64 * 2} {
			src := noisy(n, uint64(n))
			frame := zstdcodec.Encode(nil, src, level)
			if !bytes.HasPrefix(frame, zstdcodec.Magic[:]) {
				t.Fatalf("level %d, %d bytes: no zstd magic", level, n)
			}
			if got, err := zstdcodec.ContentSize(frame); err != nil || got != uint64(n) {
				t.Fatalf("level %d, %d bytes: content size %d, %v", level, n, got, err)
			}
			out, err := zstdcodec.Decode(nil, frame, n)
			if err != nil || !bytes.Equal(out, src) {
				t.Fatalf("level %d, %d bytes: decode: %v, equal %v", level, n, err, bytes.Equal(out, src))
			}
		}
	}
}

func TestDecode_refuses(t *testing.T) {
	const want = 64 * 64 * 64 * 2
	good := zstdcodec.Encode(nil, noisy(want, 7), 3)
	t.Run("wrong_size", func(t *testing.T) {
		if _, err := zstdcodec.Decode(nil, good, want-1); !errors.Is(err, zstdcodec.ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
	t.Run("flipped_byte", func(t *testing.T) {
		bad := bytes.Clone(good)
		bad[len(bad)/2] ^= 0x55
		if out, err := zstdcodec.Decode(nil, bad, want); !errors.Is(err, zstdcodec.ErrCorrupt) {
			t.Fatalf("decoded %d bytes, err = %v, want ErrCorrupt", len(out), err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		if _, err := zstdcodec.Decode(nil, good[:len(good)-9], want); !errors.Is(err, zstdcodec.ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
	t.Run("not_zstd", func(t *testing.T) {
		if _, err := zstdcodec.Decode(nil, noisy(want, 1), want); !errors.Is(err, zstdcodec.ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
	t.Run("no_content_size", func(t *testing.T) {
		// Frame header descriptor 0x00: no single segment, no content size.
		f := append(append([]byte{}, zstdcodec.Magic[:]...), 0x00, 0x50, 0x01, 0x00, 0x00)
		if _, err := zstdcodec.Decode(nil, f, 0); !errors.Is(err, zstdcodec.ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
}

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

func TestDecode_bomb(t *testing.T) {
	const want = 64 * 64 * 64 * 2
	t.Run("claims_huge_size", func(t *testing.T) {
		// Single segment, 8-byte content size 1 TiB, then one RLE block.
		f := append([]byte{}, zstdcodec.Magic[:]...)
		f = append(f, 0xe0)
		f = binary.LittleEndian.AppendUint64(f, 1<<40)
		f = append(f, 0x03, 0x00, 0x02, 0x00) // last RLE block, 64 KiB... of 0x00
		var err error
		n := allocated(func() { _, err = zstdcodec.Decode(nil, f, want) })
		if !errors.Is(err, zstdcodec.ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
		if n > 64<<10 {
			t.Fatalf("refusing the frame allocated %d bytes", n)
		}
	})
	t.Run("second_frame_expands", func(t *testing.T) {
		// A true header followed by a second frame of 32 MiB of zeros.
		f := zstdcodec.Encode(nil, make([]byte, want), 3)
		f = zstdcodec.Encode(f, make([]byte, 32<<20), 1)
		dst := make([]byte, 0, want)
		var err error
		n := allocated(func() { _, err = zstdcodec.Decode(dst, f, want) })
		if !errors.Is(err, zstdcodec.ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
		if n > 4<<20 {
			t.Fatalf("refusing the frame allocated %d bytes", n)
		}
	})
}

func FuzzDecode(f *testing.F) {
	f.Add(zstdcodec.Encode(nil, noisy(4096, 3), 3), uint16(4096))
	f.Add(zstdcodec.Encode(nil, make([]byte, 1000), 1), uint16(1000))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 2, 0}, uint16(512))
	f.Fuzz(func(t *testing.T, frame []byte, want uint16) {
		out, err := zstdcodec.Decode(nil, frame, int(want))
		if err != nil {
			if !errors.Is(err, zstdcodec.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if len(out) != int(want) {
			t.Fatalf("decoded %d bytes, want %d", len(out), want)
		}
		// A frame that decodes re-encodes to a frame that decodes alike.
		again, err := zstdcodec.Decode(nil, zstdcodec.Encode(nil, out, 1), int(want))
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("round trip of the decoded bytes: %v", err)
		}
	})
}

func TestCompressor(t *testing.T) {
	src := bytes.Repeat([]byte("go-ldm brick "), 24000) // more than two stored blocks
	for _, tc := range []struct {
		name   string
		skip   func([]byte) bool
		stored bool
	}{{"compressed", nil, false}, {"stored", func([]byte) bool { return true }, true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := zstdcodec.NewCompressor(tc.skip)
			for range 2 { // a pooled compressor is reset and used again
				var out bytes.Buffer
				c.Reset(&out)
				if _, err := c.Write(src); err != nil {
					t.Fatal(err)
				}
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				if tc.stored && out.Len() < len(src) {
					t.Fatalf("stored frame of %d bytes for %d bytes", out.Len(), len(src))
				}
				if !tc.stored && out.Len() >= len(src) {
					t.Fatalf("compressed frame of %d bytes for %d bytes", out.Len(), len(src))
				}
				d := zstdcodec.NewDecompressor(int64(len(src)))
				if err := d.Reset(&out); err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(d)
				if err != nil || !bytes.Equal(got, src) {
					t.Fatalf("decoded %d bytes, %v", len(got), err)
				}
				_ = d.Close()
			}
		})
	}
	t.Run("decompressor_limit", func(t *testing.T) {
		frame := zstdcodec.Encode(nil, make([]byte, 1<<20), 1)
		d := zstdcodec.NewDecompressor(1000)
		if err := d.Reset(bytes.NewReader(frame)); err != nil {
			t.Fatal(err)
		}
		// A frame that declares more than the limit fails at once; one
		// that does not is cut at the limit.
		got, err := io.ReadAll(d)
		if len(got) > 1000 || err == nil && len(got) != 1000 {
			t.Fatalf("read %d bytes (%v) with a limit of 1000", len(got), err)
		}
	})
}

// TestMaxEncodedSize: Encode into a dst of MaxEncodedSize's capacity never
// grows it, for data that does not compress (random bytes), that barely
// does, and that compresses well, at the sizes around a block's and over
// several blocks, at every kind of level (klauspost has four).
func TestMaxEncodedSize(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	for _, n := range []int{0, 1, 13, 255, 4096, 128<<10 - 1, 128 << 10, 128<<10 + 1, 300<<10 + 7} {
		for name, src := range map[string][]byte{"random": random(n), "noisy": noisy(n, uint64(n)), "zeros": make([]byte, n)} {
			for _, level := range []int{1, 3, 7, 19} {
				if level == 19 && n > 4096 {
					continue // slow, and its blocks are stored like the others'
				}
				dst := make([]byte, 0, zstdcodec.MaxEncodedSize(n))
				out := zstdcodec.Encode(dst, src, level)
				if len(out) > cap(dst) || (len(out) > 0 && &out[:1][0] != &dst[:1][0]) {
					t.Fatalf("%s %d bytes at level %d: a frame of %d bytes, outside the %d bytes of MaxEncodedSize", name, n, level, len(out), cap(dst))
				}
				if got, err := zstdcodec.Decode(nil, out, n); err != nil || !bytes.Equal(got, src) {
					t.Fatalf("%s %d bytes at level %d: %v", name, n, level, err)
				}
			}
		}
	}
}
