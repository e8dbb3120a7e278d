package volfile

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestImage_Voxels_streams_what_ReadVoxels_reads reads big-endian and gzip
// NRRD files through Voxels with reads of every small size (voxels split
// across reads included) and checks the bytes against ReadVoxels.
func TestImage_Voxels_streams_what_ReadVoxels_reads(t *testing.T) {
	t.Parallel()
	vals := make([]byte, 5*3*2*4)
	for i := range len(vals) / 4 {
		binary.BigEndian.PutUint32(vals[4*i:], uint32(i*2654435761))
	}
	for _, enc := range []string{"raw", "gzip"} {
		data := vals
		if enc == "gzip" {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(vals)
			zw.Close()
			data = b.Bytes()
		}
		p := filepath.Join(t.TempDir(), "v.nrrd")
		hdr := "NRRD0004\ntype: uint32\ndimension: 3\nsizes: 5 3 2\nendian: big\nencoding: " + enc + "\n\n"
		if err := os.WriteFile(p, append([]byte(hdr), data...), 0o644); err != nil {
			t.Fatal(err)
		}
		im, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		want, err := im.ReadVoxels()
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []int{1, 3, 4, 7, 64} {
			r, err := im.Voxels()
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			buf := make([]byte, step)
			for {
				n, err := r.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			r.Close()
			if !bytes.Equal(got, want) {
				t.Fatalf("%s, reads of %d: the stream differs from ReadVoxels", enc, step)
			}
		}
	}
}

// TestImage_Voxels_truncated_gzip checks that a gzip stream that ends
// early fails the read that reaches its end with ErrTruncated.
func TestImage_Voxels_truncated_gzip(t *testing.T) {
	t.Parallel()
	vals := make([]byte, 64*64*16)
	for i := range vals {
		vals[i] = byte(i * 7 / 5)
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(vals)
	zw.Close()
	p := filepath.Join(t.TempDir(), "v.nrrd")
	hdr := "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 64 64 16\nencoding: gzip\n\n"
	if err := os.WriteFile(p, append([]byte(hdr), b.Bytes()[:b.Len()/2]...), 0o644); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := im.Voxels()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n, err := io.Copy(io.Discard, r)
	if !errors.Is(err, ErrTruncated) || n >= int64(len(vals)) {
		t.Fatalf("read %d bytes, %v; want ErrTruncated before the end", n, err)
	}
}
