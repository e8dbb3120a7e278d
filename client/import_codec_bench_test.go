package client_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
)

// BenchmarkImport_codec imports the procedural 2048x2048x64 uint8 phantom
// (64^3 bricks, every level, 293 MB of bricks) into a file store served
// on loopback three times per iteration, raw, zstd level 1 and zstd level
// 3 (compressed by the importer), rotating which goes first. It reports
// each one's rate in MB of voxels per second, the compression ratio of
// each level (bytes of voxels per byte sent), each level's time against
// raw's, and CPU seconds per GB of voxels: of the whole process
// (client and server) with the in-process server, of the client alone with
// LDM_BENCH_SERVER=http://host:port (an `ldm serve` process); and the
// peak heap (see BenchmarkImport).
//
// Sub-benchmark phantom is the phantom as generated (smooth: a best case);
// noisy adds noise to the low two bits of every voxel (a deterministic
// pseudo-random sequence), closer to a scan's ratio.
func BenchmarkImport_codec(b *testing.B) {
	for _, noisy := range []bool{false, true} {
		name := "phantom"
		if noisy {
			name = "noisy"
		}
		b.Run(name, func(b *testing.B) { benchImportCodec(b, noisy) })
	}
}

func benchImportCodec(b *testing.B, noisy bool) {
	base := os.Getenv("LDM_BENCH_SERVER")
	if base == "" {
		base = startFileServer(b)
	}
	s := &single{base: base}
	im := s.importer(b)
	ctx := context.Background()
	shape := storage.Shape{X: 2048, Y: 2048, Z: 64}
	p, err := pyramid.NewProcedural(shape, storage.Uint8)
	if err != nil {
		b.Fatal(err)
	}
	meta := pyramid.ProceduralMeta("bench", shape, storage.Uint8)
	if err := meta.Normalize(); err != nil {
		b.Fatal(err)
	}
	codecs := []struct {
		codec ldmv1.Codec
		level int32
		label string
	}{
		{ldmv1.Codec_CODEC_RAW, 0, "raw"},
		{ldmv1.Codec_CODEC_ZSTD, 1, "zstd1"},
		{ldmv1.Codec_CODEC_ZSTD, 3, "zstd3"},
	}
	n := len(codecs)
	wall, cpu := make([]time.Duration, n), make([]time.Duration, n)
	bytes, sent := make([]int64, n), make([]int64, n)
	peak := make([]uint64, n)
	i := 0
	for b.Loop() {
		i++
		for k := range codecs {
			c := (k + i) % n // rotate which goes first
			name := fmt.Sprintf("codec-%s-%d", codecs[c].label, i)
			stop := heapPeak()
			t0, c0 := time.Now(), cpuTime()
			var src io.Reader = p.Reader()
			if noisy {
				src = &noiseReader{r: src, x: 1}
			}
			st, err := im.ImportReader(ctx, src, apiconv.MetaToAPI(withName(meta, name)),
				client.ImportOptions{Codec: codecs[c].codec, CodecLevel: codecs[c].level})
			if err != nil {
				b.Fatal(err)
			}
			wall[c] += time.Since(t0)
			cpu[c] += cpuTime() - c0
			h, _ := stop()
			peak[c] = max(peak[c], h)
			bytes[c] += st.Bytes
			sent[c] += st.BytesSent
			deleteVolume(b, im, name)
		}
	}
	for c, codec := range codecs {
		l := codec.label
		b.ReportMetric(float64(bytes[c])/wall[c].Seconds()/1e6, l+"-MB/s")
		b.ReportMetric(cpu[c].Seconds()/(float64(bytes[c])/1e9), l+"-cpu-s/GB")
		b.ReportMetric(float64(peak[c])/(1<<20), l+"-peak-heap-MiB")
		if codec.codec == ldmv1.Codec_CODEC_ZSTD {
			b.ReportMetric(float64(bytes[c])/float64(sent[c]), l+"-ratio")
			b.ReportMetric(wall[0].Seconds()/wall[c].Seconds(), l+"-x-raw-speed")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// noiseReader adds 0..3 to every byte of r (wrapping), from an xorshift
// sequence seeded by x.
type noiseReader struct {
	r io.Reader
	x uint64
}

func (n *noiseReader) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	for i := range p[:k] {
		n.x ^= n.x << 13
		n.x ^= n.x >> 7
		n.x ^= n.x << 17
		p[i] += byte(n.x & 3)
	}
	return k, err
}
