package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
)

// BenchmarkViewer_load measures, in headless Chromium against `ldm serve`
// over loopback, the time from page load (navigation start) to the first
// complete picture (the coarsest level drawn) and to full resolution (LOD 0
// drawn in the slices and the 3D view), and the browser's receive rate
// while streaming. Run it without the race detector:
//
//	go test -run '^$' -bench BenchmarkViewer_load -benchtime 3x ./cmd/ldm
func BenchmarkViewer_load(b *testing.B) {
	for _, tc := range []struct {
		name string
		n    uint32
		dt   storage.DataType
	}{
		{"256cubed_uint8", 256, storage.Uint8},
		{"512cubed_uint16", 512, storage.Uint16},
	} {
		b.Run(tc.name, func(b *testing.B) {
			base := startTestServer(b)
			c := testClients(b, base)
			name := fmt.Sprintf("bench-%d-%s", tc.n, tc.dt)
			src := benchVolume(tc.n, tc.dt)
			v := &ldmv1.Volume{
				Name: name, DataType: ldmv1.DataType(tc.dt), Shape: &ldmv1.Shape{X: tc.n, Y: tc.n, Z: tc.n},
				BrickShape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, LodCount: pyramid.LevelsToFit(storage.Shape{X: tc.n, Y: tc.n, Z: tc.n}, storage.Shape{X: 64, Y: 64, Z: 64}),
			}
			if err := importVolume(context.Background(), c, v, src, io.Discard, true); err != nil {
				b.Fatal(err)
			}
			ctx := testutil.NewBrowser(b, 1280, 800)
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
				b.Fatal(err)
			}
			var firstSlices, first, full, mbs, bytesIn float64
			b.ResetTimer()
			for b.Loop() {
				if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?volume="+name)); err != nil {
					b.Fatal(err)
				}
				st := waitLoaded(b, ctx, name, 2*time.Minute)
				b.Logf("opened %.0f, first brick %.0f, first slices %.0f, first picture %.0f, full %.0f ms; apply %.0f, slices %.0f, 3D %.0f, streaming %.0f ms",
					st.Stats.OpenedAt, st.Stats.FirstBrick, st.Stats.FirstSlices, st.Stats.FirstPicture, st.Stats.FullResolution, st.Stats.ApplyMs, st.Stats.DrawMs, st.Stats.Draw3dMs, st.Stats.StreamMs)
				firstSlices += st.Stats.FirstSlices
				first += st.Stats.FirstPicture
				full += st.Stats.FullResolution
				bytesIn = st.Stats.Bytes
				mbs += st.Stats.Bytes / 1e6 / (st.Stats.StreamMs / 1000)
			}
			n := float64(b.N)
			b.ReportMetric(firstSlices/n, "ms-first-slices")
			b.ReportMetric(first/n, "ms-first-picture")
			b.ReportMetric(full/n, "ms-full-resolution")
			b.ReportMetric(mbs/n, "browser-MB/s")
			b.ReportMetric(bytesIn/1e6, "MB-streamed")
			b.ReportMetric(0, "ns/op") // the figures above are what matters
		})
	}
}

// benchVolume returns an n^3 volume of type dt: the demo phantom's
// structures scaled to n, with a gradient, as little-endian voxels.
func benchVolume(n uint32, dt storage.DataType) io.ReaderAt {
	size := dt.Size()
	buf := make([]byte, int(n)*int(n)*int(n)*size)
	s := float64(pyramid.PhantomSize) / float64(n)
	i := 0
	for z := range int(n) {
		for y := range int(n) {
			for x := range int(n) {
				v := uint32(pyramid.PhantomValue(int(float64(x)*s), int(float64(y)*s), int(float64(z)*s)))
				switch size {
				case 1:
					buf[i] = byte(v)
				case 2:
					binary.LittleEndian.PutUint16(buf[i:], uint16(v*200+uint32(x)))
				case 4:
					binary.LittleEndian.PutUint32(buf[i:], v*70000+uint32(x))
				}
				i += size
			}
		}
	}
	return bytes.NewReader(buf)
}
