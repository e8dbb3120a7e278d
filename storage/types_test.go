package storage_test

import (
	"math"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
)

func TestVolumeMeta_LODShapeAndBrickGrid(t *testing.T) {
	t.Parallel()
	const max = math.MaxUint32
	for _, tt := range []struct {
		shape, brick storage.Shape
		lod          uint32
		wantShape    storage.Shape
		wantGrid     storage.Shape
	}{
		{storage.Shape{X: 130, Y: 64, Z: 1}, storage.Shape{X: 64, Y: 64, Z: 64}, 0, storage.Shape{X: 130, Y: 64, Z: 1}, storage.Shape{X: 3, Y: 1, Z: 1}},
		{storage.Shape{X: 5, Y: 3, Z: 1}, storage.Shape{X: 2, Y: 2, Z: 2}, 1, storage.Shape{X: 3, Y: 2, Z: 1}, storage.Shape{X: 2, Y: 1, Z: 1}},
		{storage.Shape{X: 5, Y: 3, Z: 1}, storage.Shape{X: 2, Y: 2, Z: 2}, 5, storage.Shape{X: 1, Y: 1, Z: 1}, storage.Shape{X: 1, Y: 1, Z: 1}},
		// The largest shape neither wraps to zero voxels nor to zero bricks.
		{storage.Shape{X: max, Y: max, Z: max}, storage.Shape{X: 64, Y: 64, Z: 64}, 0, storage.Shape{X: max, Y: max, Z: max}, storage.Shape{X: 1 << 26, Y: 1 << 26, Z: 1 << 26}},
		{storage.Shape{X: max, Y: max, Z: max}, storage.Shape{X: 1, Y: 1, Z: 1}, 1, storage.Shape{X: 1 << 31, Y: 1 << 31, Z: 1 << 31}, storage.Shape{X: 1 << 31, Y: 1 << 31, Z: 1 << 31}},
	} {
		m := storage.VolumeMeta{Name: "v", Shape: tt.shape, BrickShape: tt.brick, DataType: storage.Uint8, LODCount: 32}
		if err := m.Normalize(); err != nil {
			t.Fatal(err)
		}
		if got := m.LODShape(tt.lod); got != tt.wantShape {
			t.Errorf("%v LODShape(%d) = %v, want %v", tt.shape, tt.lod, got, tt.wantShape)
		}
		if got := m.BrickGrid(tt.lod); got != tt.wantGrid {
			t.Errorf("%v bricks %v BrickGrid(%d) = %v, want %v", tt.shape, tt.brick, tt.lod, got, tt.wantGrid)
		}
	}
}
