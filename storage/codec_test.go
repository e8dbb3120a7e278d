package storage_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xcheng85/go-ldm/internal/zstdcodec"
	"github.com/xcheng85/go-ldm/storage"
)

func TestParseCodec(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]storage.Codec{
		"raw":     {},
		"zstd":    {Kind: storage.CodecZstd, Level: storage.DefaultZstdLevel},
		"zstd:1":  {Kind: storage.CodecZstd, Level: 1},
		"zstd:22": {Kind: storage.CodecZstd, Level: 22},
	} {
		got, err := storage.ParseCodec(in)
		if err != nil || got != want {
			t.Fatalf("ParseCodec(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if again, _ := storage.ParseCodec(got.String()); again != got {
			t.Fatalf("ParseCodec(%q.String()) = %+v", in, again)
		}
	}
	for _, in := range []string{"", "gzip", "zstd:0", "zstd:23", "zstd:x", "raw:3"} {
		if _, err := storage.ParseCodec(in); !errors.Is(err, storage.ErrInvalidArgument) {
			t.Fatalf("ParseCodec(%q) = %v, want ErrInvalidArgument", in, err)
		}
	}
}

// metaFile returns the path of volume's meta file under dir.
func metaFile(tb testing.TB, dir, volume string) string {
	tb.Helper()
	var found string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "meta" && filepath.Base(filepath.Dir(p)) == volume {
			found = p
		}
		return nil
	})
	if found == "" {
		tb.Fatalf("no meta file of volume %q under %s", volume, dir)
	}
	return found
}

// TestStore_codec checks that a volume's codec survives a reopen and a
// snapshot, that a raw volume's meta file has no codec field (it is the
// file of a store from before codecs), and that a meta file written
// before codecs existed reads as raw.
func TestStore_codec(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := storage.Open(dir, storage.Config{})
	if err != nil {
		t.Fatal(err)
	}
	base := storage.VolumeMeta{Shape: storage.Shape{X: 8, Y: 8, Z: 8}, DataType: storage.Uint16}
	z, r := base, base
	z.Name, z.Codec = "z", storage.Codec{Kind: storage.CodecZstd, Level: 9}
	r.Name = "r"
	if _, err := st.CreateVolume(ctx, z); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateVolume(ctx, r); err != nil {
		t.Fatal(err)
	}
	bad := base
	bad.Name, bad.Codec = "bad", storage.Codec{Kind: storage.CodecZstd, Level: 40}
	if _, err := st.CreateVolume(ctx, bad); !errors.Is(err, storage.ErrInvalidArgument) {
		t.Fatalf("zstd level 40: %v, want ErrInvalidArgument", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(metaFile(t, dir, "r"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "codec") {
		t.Fatalf("a raw volume's meta file names a codec: %s", raw[16:])
	}
	// A meta file as a store from before codecs wrote it: its JSON has no
	// codec fields.
	old := `{"name":"r","shape":[8,8,8],"data_type":2,"brick_shape":[64,64,64],"lod_count":1,"created_at":"2026-01-02T03:04:05Z","index":0}`
	b := []byte("LDMV")
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(old)))
	b = binary.LittleEndian.AppendUint32(b, storage.Checksum([]byte(old)))
	b = append(b, old...)
	if err := os.WriteFile(metaFile(t, dir, "r"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = storage.Open(dir, storage.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if v, err := st.Volume("r"); err != nil || v.Codec != (storage.Codec{}) {
		t.Fatalf("old volume: codec %+v, %v; want raw", v.Codec, err)
	}
	if v, err := st.Volume("z"); err != nil || v.Codec != z.Codec {
		t.Fatalf("after reopen: codec %+v, %v; want %+v", v.Codec, err, z.Codec)
	}
	// A snapshot restored into another store keeps the codec.
	sn, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Release()
	pr, pw := io.Pipe()
	go func() { _, err := sn.WriteTo(pw); pw.CloseWithError(err) }()
	other, err := storage.Open(t.TempDir(), storage.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Restore(pr); err != nil {
		t.Fatal(err)
	}
	if v, err := other.Volume("z"); err != nil || v.Codec != z.Codec {
		t.Fatalf("after restore: codec %+v, %v; want %+v", v.Codec, err, z.Codec)
	}
}

// TestStore_Append_codec checks, on the file store and the memory store,
// that a zstd volume takes only zstd frames whose header declares a
// content size (a brick's size for a brick), and a raw volume anything.
func TestStore_Append_codec(t *testing.T) {
	t.Parallel()
	st, err := storage.Open(t.TempDir(), storage.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for name, s := range map[string]interface {
		CreateVolume(context.Context, storage.VolumeMeta) (storage.VolumeInfo, error)
		Append(context.Context, string, ...storage.Tile) (uint64, error)
	}{"file": st, "memory": storage.NewMemory(0)} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			m := storage.VolumeMeta{Name: "z", Shape: storage.Shape{X: 8, Y: 8, Z: 8}, BrickShape: storage.Shape{X: 8, Y: 8, Z: 8},
				DataType: storage.Uint16, Codec: storage.Codec{Kind: storage.CodecZstd}}
			if _, err := s.CreateVolume(ctx, m); err != nil {
				t.Fatal(err)
			}
			raw := make([]byte, 8*8*8*2)
			key := storage.BrickKey{}
			for what, tile := range map[string]storage.Tile{
				"raw brick":          {HasKey: true, Key: key, Value: raw},
				"frame of 100 bytes": {HasKey: true, Key: key, Value: zstdcodec.Encode(nil, raw[:100], 3)},
				"empty":              {HasKey: true, Key: key},
			} {
				if _, err := s.Append(ctx, "z", tile); !errors.Is(err, storage.ErrInvalidArgument) {
					t.Fatalf("%s: %v, want ErrInvalidArgument", what, err)
				}
			}
			if _, err := s.Append(ctx, "z", storage.Tile{HasKey: true, Key: key, Value: zstdcodec.Encode(nil, raw, 3)},
				storage.Tile{Value: zstdcodec.Encode(nil, []byte("not a brick"), 1)}); err != nil {
				t.Fatalf("frames: %v", err)
			}
			m.Name, m.Codec = "r", storage.Codec{}
			if _, err := s.CreateVolume(ctx, m); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Append(ctx, "r", storage.Tile{HasKey: true, Key: key, Value: raw[:10]}); err != nil {
				t.Fatalf("raw volume: %v", err)
			}
		})
	}
}
