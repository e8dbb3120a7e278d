package apiconv

import (
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// VolumeToAPI converts a stored volume, output-only fields included, to its
// API message. A zero CreatedAt leaves create_time unset.
func VolumeToAPI(v storage.VolumeInfo) *ldmv1.Volume {
	out := MetaToAPI(v.VolumeMeta)
	out.NextOffset = v.NextOffset
	out.SizeBytes = v.SizeBytes
	if !v.CreatedAt.IsZero() {
		out.CreateTime = timestamppb.New(v.CreatedAt)
		out.Generation = Generation(v)
	}
	return out
}

// Generation is a volume's generation (Volume.generation): its creation
// time in nanoseconds since 1970, which every replica stores alike and a
// volume deleted and created again under the same name does not share. 0
// for a volume without a creation time.
func Generation(v storage.VolumeInfo) uint64 {
	if v.CreatedAt.IsZero() {
		return 0
	}
	return uint64(v.CreatedAt.UnixNano())
}

// MetaToAPI converts a volume's metadata (what a caller chooses when it
// creates a volume) to an API message with no output-only fields set.
func MetaToAPI(m storage.VolumeMeta) *ldmv1.Volume {
	return &ldmv1.Volume{
		Name:       m.Name,
		Shape:      ShapeToAPI(m.Shape),
		DataType:   ldmv1.DataType(m.DataType),
		BrickShape: ShapeToAPI(m.BrickShape),
		LodCount:   m.LODCount,
		Spacing:    m.Spacing,
		Labels:     m.Labels,
		Transform:  affineToAPI(m),
		Space:      SpaceToAPI(m.Space),
		Codec:      CodecToAPI(m.Codec.Kind),
		CodecLevel: int32(m.Codec.Level),
	}
}

// affineToAPI returns the volume's transform, diag(spacing, 1) when it has
// none (volumes created before transforms existed read as that).
func affineToAPI(m storage.VolumeMeta) []float64 {
	a := m.Affine()
	return a[:]
}

// spaces pairs each store space name with its API enum.
var spaces = map[storage.Space]ldmv1.Space{
	storage.SpaceUnspecified: ldmv1.Space_SPACE_UNSPECIFIED,
	storage.SpaceRAS:         ldmv1.Space_SPACE_RAS,
	storage.SpaceLPS:         ldmv1.Space_SPACE_LPS,
	storage.SpaceScanner:     ldmv1.Space_SPACE_SCANNER,
}

// SpaceToAPI converts a store space name to its API enum; an unknown name
// gives SPACE_UNSPECIFIED.
func SpaceToAPI(s storage.Space) ldmv1.Space {
	return spaces[s] // the zero value is SPACE_UNSPECIFIED
}

// SpaceFromAPI converts an API space to the store's name. A value the enum
// does not define gives a name that storage.Space.Valid rejects.
func SpaceFromAPI(s ldmv1.Space) storage.Space {
	for name, api := range spaces {
		if api == s {
			return name
		}
	}
	return storage.Space(fmt.Sprintf("unknown space %d", int32(s)))
}

// MetaFromAPI converts an API volume to the store's metadata. Output-only
// fields are ignored; zero fields stay zero (see storage.VolumeMeta.Normalize
// for their defaults).
func MetaFromAPI(v *ldmv1.Volume) storage.VolumeMeta {
	return storage.VolumeMeta{
		Name:       v.GetName(),
		Shape:      ShapeFromAPI(v.GetShape()),
		DataType:   storage.DataType(v.GetDataType()),
		BrickShape: ShapeFromAPI(v.GetBrickShape()),
		LODCount:   v.GetLodCount(),
		Spacing:    v.GetSpacing(),
		Transform:  v.GetTransform(),
		Space:      SpaceFromAPI(v.GetSpace()),
		Labels:     v.GetLabels(),
		Codec:      storage.Codec{Kind: CodecFromAPI(v.GetCodec()), Level: int(v.GetCodecLevel())},
	}
}

// CodecToAPI converts a store codec kind to its API enum (never
// CODEC_UNSPECIFIED).
func CodecToAPI(k storage.CodecKind) ldmv1.Codec {
	if k == storage.CodecZstd {
		return ldmv1.Codec_CODEC_ZSTD
	}
	return ldmv1.Codec_CODEC_RAW
}

// CodecFromAPI converts an API codec to the store's kind: unset means raw.
// A value the enum does not define gives a kind that
// storage.VolumeMeta.Normalize rejects.
func CodecFromAPI(c ldmv1.Codec) storage.CodecKind {
	switch c {
	case ldmv1.Codec_CODEC_UNSPECIFIED, ldmv1.Codec_CODEC_RAW:
		return storage.CodecRaw
	case ldmv1.Codec_CODEC_ZSTD:
		return storage.CodecZstd
	}
	return storage.CodecKind(255)
}

// ShapeToAPI converts a shape to its API message.
func ShapeToAPI(s storage.Shape) *ldmv1.Shape {
	return &ldmv1.Shape{X: s.X, Y: s.Y, Z: s.Z}
}

// ShapeFromAPI converts an API shape; nil gives the zero shape.
func ShapeFromAPI(s *ldmv1.Shape) storage.Shape {
	return storage.Shape{X: s.GetX(), Y: s.GetY(), Z: s.GetZ()}
}

// TileToAPI converts a stored tile to its API message, offset and CRC
// included. The key is set only when the tile has one (t.HasKey).
func TileToAPI(t storage.Tile) *ldmv1.Tile {
	out := &ldmv1.Tile{Value: t.Value, Offset: t.Offset, Crc32C: t.CRC32C}
	if t.HasKey {
		out.Key = KeyToAPI(t.Key)
	}
	return out
}

// TileFromAPI converts an API tile to a store tile for Append. HasKey is
// true exactly when the message has a key; the offset is ignored (the store
// assigns it).
func TileFromAPI(t *ldmv1.Tile) storage.Tile {
	out := storage.Tile{Value: t.GetValue(), CRC32C: t.GetCrc32C()}
	if k := t.GetKey(); k != nil {
		out.HasKey = true
		out.Key = KeyFromAPI(k)
	}
	return out
}

// KeyToAPI converts a brick key to its API message.
func KeyToAPI(k storage.BrickKey) *ldmv1.BrickKey {
	return &ldmv1.BrickKey{Lod: k.LOD, X: k.X, Y: k.Y, Z: k.Z}
}

// KeyFromAPI converts an API brick key; nil gives the zero key (LOD 0,
// brick 0,0,0).
func KeyFromAPI(k *ldmv1.BrickKey) storage.BrickKey {
	return storage.BrickKey{LOD: k.GetLod(), X: k.GetX(), Y: k.GetY(), Z: k.GetZ()}
}
