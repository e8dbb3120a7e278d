package volfile

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The seed corpus lives in testdata/fuzz; run a target with, for example,
// go test -run '^$' -fuzz FuzzParseNRRDHeader -fuzztime 30s -fuzzminimizetime 2s ./volfile
// (without -fuzzminimizetime, minimizing one large new input can take most
// of a short run, so FuzzOpen reports almost no executions).

// FuzzParseNIfTI1Header checks that any 348 bytes either parse into a
// consistent header or fail with one of the package's sentinels.
func FuzzParseNIfTI1Header(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseNIfTI1Header(b)
		checkParsed(t, h, err)
	})
}

// FuzzParseNRRDHeader does the same for NRRD headers.
func FuzzParseNRRDHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseNRRDHeader(bufio.NewReader(bytes.NewReader(b)))
		checkParsed(t, h, err)
		if err == nil && (n < 0 || n > int64(len(b))) {
			t.Fatalf("header length %d outside the %d input bytes", n, len(b))
		}
	})
}

// FuzzOpen writes the input as a file and reads it whole: any file either
// reads into exactly VolumeBytes or fails with a sentinel.
func FuzzOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "in")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		im, err := Open(p, Options{HasTimePoint: true})
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrTruncated) && !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("Open: unexpected error %v", err)
			}
			return
		}
		checkParsed(t, im.Header, nil)
		if im.VolumeBytes() > 1<<20 {
			return // a large claimed volume: only the header is of interest
		}
		v, err := im.ReadVoxels()
		if err == nil && int64(len(v)) != im.VolumeBytes() {
			t.Fatalf("ReadVoxels returned %d bytes, want %d", len(v), im.VolumeBytes())
		}
	})
}

func checkParsed(t *testing.T, h Header, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrTruncated) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		return
	}
	if h.Shape.X == 0 || h.Shape.Y == 0 || h.Shape.Z == 0 || h.DataType.Size() == 0 || h.TimePoints == 0 || h.ByteOrder == nil {
		t.Fatalf("inconsistent header %+v", h)
	}
	for _, s := range h.Spacing {
		if !(s > 0) {
			t.Fatalf("spacing %v", h.Spacing)
		}
	}
}
