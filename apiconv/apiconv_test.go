package apiconv_test

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

func TestVolume_roundTrip(t *testing.T) {
	t.Parallel()
	meta := storage.VolumeMeta{
		Name:       "ct",
		Shape:      storage.Shape{X: 512, Y: 256, Z: 300},
		DataType:   storage.Int16,
		BrickShape: storage.Shape{X: 64, Y: 32, Z: 16},
		LODCount:   4,
		Spacing:    []float64{0.5, 0.5, 1.25},
		Labels:     map[string]string{"modality": "CT"},
	}
	if got := apiconv.MetaFromAPI(apiconv.MetaToAPI(meta)); !equalMeta(got, meta) {
		t.Fatalf("meta round trip: got %+v, want %+v", got, meta)
	}

	created := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	info := storage.VolumeInfo{VolumeMeta: meta, NextOffset: 17, SizeBytes: 1 << 20}
	info.CreatedAt = created
	v := apiconv.VolumeToAPI(info)
	want := &ldmv1.Volume{
		Name: "ct", Shape: &ldmv1.Shape{X: 512, Y: 256, Z: 300}, DataType: ldmv1.DataType(storage.Int16),
		BrickShape: &ldmv1.Shape{X: 64, Y: 32, Z: 16}, LodCount: 4, Spacing: []float64{0.5, 0.5, 1.25},
		Labels: map[string]string{"modality": "CT"}, NextOffset: 17, SizeBytes: 1 << 20, CreateTime: timestamppb.New(created),
		Generation: uint64(created.UnixNano()),
		// A volume without a transform reads as diag(spacing, 1).
		Transform: []float64{0.5, 0, 0, 0, 0, 0.5, 0, 0, 0, 0, 1.25, 0, 0, 0, 0, 1},
		// Reads always say the codec; a volume without one is raw.
		Codec: ldmv1.Codec_CODEC_RAW,
	}
	if !proto.Equal(v, want) {
		t.Fatalf("VolumeToAPI = %v, want %v", v, want)
	}
	// Output-only fields do not flow back into the metadata.
	if got := apiconv.MetaFromAPI(v); !equalMeta(got, meta) || !got.CreatedAt.IsZero() {
		t.Fatalf("MetaFromAPI(VolumeToAPI) = %+v, want %+v", got, meta)
	}
	// No creation time: create_time stays unset.
	if v := apiconv.VolumeToAPI(storage.VolumeInfo{VolumeMeta: meta}); v.CreateTime != nil || v.Generation != 0 {
		t.Fatalf("create_time %v for a zero CreatedAt", v.CreateTime)
	}
	// nil converts like an empty message.
	if got := apiconv.MetaFromAPI(nil); !equalMeta(got, storage.VolumeMeta{}) {
		t.Fatalf("MetaFromAPI(nil) = %+v", got)
	}
}

func TestVolume_codec(t *testing.T) {
	t.Parallel()
	meta := storage.VolumeMeta{Name: "z", Codec: storage.Codec{Kind: storage.CodecZstd, Level: 7}}
	v := apiconv.MetaToAPI(meta)
	if v.GetCodec() != ldmv1.Codec_CODEC_ZSTD || v.GetCodecLevel() != 7 {
		t.Fatalf("MetaToAPI codec = %v level %d, want CODEC_ZSTD level 7", v.GetCodec(), v.GetCodecLevel())
	}
	if got := apiconv.MetaFromAPI(v).Codec; got != meta.Codec {
		t.Fatalf("MetaFromAPI codec = %+v, want %+v", got, meta.Codec)
	}
	if got := apiconv.MetaFromAPI(&ldmv1.Volume{}).Codec; got != (storage.Codec{}) {
		t.Fatalf("unset codec = %+v, want raw", got)
	}
	bad := apiconv.MetaFromAPI(&ldmv1.Volume{Name: "b", Shape: &ldmv1.Shape{X: 1, Y: 1, Z: 1}, DataType: ldmv1.DataType_DATA_TYPE_UINT8, Codec: 99})
	if err := bad.Normalize(); !errors.Is(err, storage.ErrInvalidArgument) {
		t.Fatalf("unknown codec: Normalize = %v, want ErrInvalidArgument", err)
	}
}

func TestTile_roundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		tile storage.Tile
	}{
		{"keyed", storage.Tile{Value: []byte{1, 2, 3}, CRC32C: 99, HasKey: true, Key: storage.BrickKey{LOD: 2, X: 3, Y: 4, Z: 5}}},
		{"keyed_zero", storage.Tile{Value: []byte{7}, HasKey: true}},
		{"unkeyed", storage.Tile{Value: []byte{9, 9}, CRC32C: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := tc.tile
			in.Offset = 42
			m := apiconv.TileToAPI(in)
			if m.GetOffset() != 42 || (m.GetKey() != nil) != in.HasKey {
				t.Fatalf("TileToAPI(%+v) = %v", in, m)
			}
			got := apiconv.TileFromAPI(m)
			// The store assigns offsets: TileFromAPI drops the message's.
			if got.Offset != 0 || string(got.Value) != string(in.Value) || got.CRC32C != in.CRC32C || got.HasKey != in.HasKey || got.Key != in.Key {
				t.Fatalf("round trip of %+v gave %+v", in, got)
			}
			if len(in.Value) > 0 && &got.Value[0] != &in.Value[0] {
				t.Fatal("the tile's bytes were copied, want shared")
			}
		})
	}
}

func TestKeyAndShape_roundTrip(t *testing.T) {
	t.Parallel()
	k := storage.BrickKey{LOD: 1, X: 2, Y: 3, Z: 4}
	if got := apiconv.KeyFromAPI(apiconv.KeyToAPI(k)); got != k {
		t.Fatalf("key round trip: %+v, want %+v", got, k)
	}
	s := storage.Shape{X: 5, Y: 6, Z: 7}
	if got := apiconv.ShapeFromAPI(apiconv.ShapeToAPI(s)); got != s {
		t.Fatalf("shape round trip: %+v, want %+v", got, s)
	}
	if got := apiconv.KeyFromAPI(nil); got != (storage.BrickKey{}) {
		t.Fatalf("KeyFromAPI(nil) = %+v", got)
	}
	if got := apiconv.ShapeFromAPI(nil); got != (storage.Shape{}) {
		t.Fatalf("ShapeFromAPI(nil) = %+v", got)
	}
}

func equalMeta(a, b storage.VolumeMeta) bool {
	if a.Name != b.Name || a.Shape != b.Shape || a.DataType != b.DataType || a.BrickShape != b.BrickShape || a.LODCount != b.LODCount ||
		len(a.Spacing) != len(b.Spacing) || len(a.Labels) != len(b.Labels) {
		return false
	}
	for i := range a.Spacing {
		if a.Spacing[i] != b.Spacing[i] {
			return false
		}
	}
	for k, v := range a.Labels {
		if b.Labels[k] != v {
			return false
		}
	}
	return true
}

func TestVolume_transformAndSpace(t *testing.T) {
	t.Parallel()
	oblique := []float64{
		0.4330127018922193, -0.25, 0, -90.5,
		0.25, 0.4330127018922193, 0, 12.25,
		0, 0, 2, 33,
		0, 0, 0, 1,
	}
	for _, tc := range []struct {
		name  string
		space storage.Space
		api   ldmv1.Space
	}{
		{"ras", storage.SpaceRAS, ldmv1.Space_SPACE_RAS},
		{"lps", storage.SpaceLPS, ldmv1.Space_SPACE_LPS},
		{"scanner", storage.SpaceScanner, ldmv1.Space_SPACE_SCANNER},
		{"unspecified", storage.SpaceUnspecified, ldmv1.Space_SPACE_UNSPECIFIED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			meta := storage.VolumeMeta{Name: "v", Shape: storage.Shape{X: 4, Y: 4, Z: 4}, DataType: storage.Uint8, Transform: oblique, Space: tc.space}
			v := apiconv.MetaToAPI(meta)
			if v.GetSpace() != tc.api {
				t.Fatalf("space %v, want %v", v.GetSpace(), tc.api)
			}
			if len(v.GetTransform()) != 16 {
				t.Fatalf("transform %v", v.GetTransform())
			}
			for i := range oblique {
				if v.GetTransform()[i] != oblique[i] {
					t.Fatalf("transform[%d] = %v, want %v exactly", i, v.GetTransform()[i], oblique[i])
				}
			}
			back := apiconv.MetaFromAPI(v)
			if back.Space != tc.space || len(back.Transform) != 16 {
				t.Fatalf("MetaFromAPI: space %q transform %v", back.Space, back.Transform)
			}
			if err := back.Normalize(); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("unknown_enum_refused", func(t *testing.T) {
		t.Parallel()
		m := apiconv.MetaFromAPI(&ldmv1.Volume{Name: "v", Shape: &ldmv1.Shape{X: 1, Y: 1, Z: 1}, DataType: ldmv1.DataType_DATA_TYPE_UINT8, Space: ldmv1.Space(42)})
		if err := m.Normalize(); err == nil {
			t.Fatalf("space %q accepted", m.Space)
		}
	})
}
