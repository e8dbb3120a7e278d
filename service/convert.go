package service

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// volumeToProto converts a store volume to its API message.
func volumeToProto(v storage.VolumeInfo) *ldmv1.Volume {
	out := &ldmv1.Volume{
		Name:       v.Name,
		Shape:      shapeToProto(v.Shape),
		DataType:   ldmv1.DataType(v.DataType),
		BrickShape: shapeToProto(v.BrickShape),
		LodCount:   v.LODCount,
		Spacing:    v.Spacing,
		Labels:     v.Labels,
		NextOffset: v.NextOffset,
		SizeBytes:  v.SizeBytes,
	}
	if !v.CreatedAt.IsZero() {
		out.CreateTime = timestamppb.New(v.CreatedAt)
	}
	return out
}

// volumeFromProto converts an API volume to the store's metadata. Output
// only fields are ignored.
func volumeFromProto(v *ldmv1.Volume) storage.VolumeMeta {
	return storage.VolumeMeta{
		Name:       v.GetName(),
		Shape:      shapeFromProto(v.GetShape()),
		DataType:   storage.DataType(v.GetDataType()),
		BrickShape: shapeFromProto(v.GetBrickShape()),
		LODCount:   v.GetLodCount(),
		Spacing:    v.GetSpacing(),
		Labels:     v.GetLabels(),
	}
}

func shapeToProto(s storage.Shape) *ldmv1.Shape {
	return &ldmv1.Shape{X: s.X, Y: s.Y, Z: s.Z}
}

func shapeFromProto(s *ldmv1.Shape) storage.Shape {
	return storage.Shape{X: s.GetX(), Y: s.GetY(), Z: s.GetZ()}
}

// tileToProto converts a store tile to its API message. The tile's bytes
// are shared, not copied.
func tileToProto(t storage.Tile) *ldmv1.Tile {
	out := &ldmv1.Tile{Value: t.Value, Offset: t.Offset, Crc32C: t.CRC32C}
	if t.HasKey {
		out.Key = keyToProto(t.Key)
	}
	return out
}

// tileFromProto converts an API tile to a store tile for Append. The bytes
// are shared, not copied; the offset is ignored (the store assigns it).
func tileFromProto(t *ldmv1.Tile) storage.Tile {
	out := storage.Tile{Value: t.GetValue(), CRC32C: t.GetCrc32C()}
	if k := t.GetKey(); k != nil {
		out.HasKey = true
		out.Key = keyFromProto(k)
	}
	return out
}

func keyToProto(k storage.BrickKey) *ldmv1.BrickKey {
	return &ldmv1.BrickKey{Lod: k.LOD, X: k.X, Y: k.Y, Z: k.Z}
}

func keyFromProto(k *ldmv1.BrickKey) storage.BrickKey {
	return storage.BrickKey{LOD: k.GetLod(), X: k.GetX(), Y: k.GetY(), Z: k.GetZ()}
}
