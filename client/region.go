package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/volfile"
)

// Exporter reads regions and exports volumes through the generated
// VolumeService client of one server. It holds no state of its own; it is
// safe for concurrent use when its client is.
type Exporter struct {
	Volumes ldmv1connect.VolumeServiceClient
	// Progress, when not nil, is called after every piece or brick written,
	// one call at a time, from the goroutine of the call. Bricks counts
	// bricks for ExportZarr and is zero for region reads.
	Progress func(Progress)
	// View, when set, is the server's OME-Zarr view, whose metadata
	// ExportZarr copies.
	View *ZarrView
}

// Region describes a box read by ReadRegion.
type Region struct {
	// Volume is the volume as the server describes it (LOD 0).
	Volume *ldmv1.Volume
	// Lod is the level read; Min and Max the box in voxels of that level
	// (min inclusive, max exclusive), clipped to the level by the server.
	Lod      uint32
	Min, Max [3]uint32
	// DataType is the voxel type.
	DataType storage.DataType
	// Transform maps the box's voxel (i, j, k) (its centre) to world
	// coordinates in mm: the level's affine with the origin moved to the
	// box's first voxel. Space is its world space.
	Transform storage.Affine
	Space     storage.Space
	// Bytes is the size of the box's voxels.
	Bytes int64
}

// Shape returns the box's size in voxels.
func (r *Region) Shape() storage.Shape {
	return storage.Shape{X: r.Max[0] - r.Min[0], Y: r.Max[1] - r.Min[1], Z: r.Max[2] - r.Min[2]}
}

// RegionAffine returns the voxel-to-world affine of a box at level lod of
// a volume whose first voxel is min: the level's affine
// (storage.VolumeMeta.LODAffine) with its translation moved to min.
func RegionAffine(m storage.VolumeMeta, lod uint32, min [3]uint32) storage.Affine {
	a := m.LODAffine(lod)
	for r := 0; r < 3; r++ {
		a[4*r+3] += a[4*r]*float64(min[0]) + a[4*r+1]*float64(min[1]) + a[4*r+2]*float64(min[2])
	}
	return a
}

// ReadRegion reads the box req names into dst: voxel v of the box (x
// fastest, from 0) goes to byte v*voxel size of dst. open is called once,
// after the server has described the box and before any voxel is written,
// and returns dst (it may create a file sized for the box). It returns the
// box read. The server sends the box in pieces of at most 4 MiB in any
// order; ReadRegion holds one piece at a time.
func (e Exporter) ReadRegion(ctx context.Context, req *ldmv1.ReadRegionRequest, open func(*Region) (io.WriterAt, error)) (*Region, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if open or a write fails
	stream, err := e.Volumes.ReadRegion(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var reg *Region
	var dst io.WriterAt
	var done int64
	start := time.Now()
	for stream.Receive() {
		m := stream.Msg()
		if reg == nil {
			if reg, err = regionOf(req.GetLod(), m); err != nil {
				return nil, err
			}
			if dst, err = open(reg); err != nil {
				return reg, err
			}
		}
		if err := placePiece(reg, m, dst); err != nil {
			return reg, err
		}
		done += int64(len(m.GetData()))
		if e.Progress != nil {
			e.Progress(Progress{Volume: req.GetVolume(), Bytes: reg.Bytes, BytesDone: done, Elapsed: time.Since(start)})
		}
	}
	if err := stream.Err(); err != nil {
		return reg, err
	}
	if reg == nil {
		return nil, errors.New("ReadRegion: the server sent nothing")
	}
	if done != reg.Bytes {
		return reg, fmt.Errorf("ReadRegion: the server sent %d of the box's %d bytes", done, reg.Bytes)
	}
	return reg, nil
}

// placePiece writes the voxels of one ReadRegion piece to their places in
// dst: runs of whole lines, rows or slices at once where the piece spans
// the box's width, or width and height.
func placePiece(reg *Region, m *ldmv1.ReadRegionResponse, dst io.WriterAt) error {
	vs := int64(reg.DataType.Size())
	p := m.GetPiece()
	lo := [3]uint32{p.GetMin().GetX(), p.GetMin().GetY(), p.GetMin().GetZ()}
	hi := [3]uint32{p.GetMax().GetX(), p.GetMax().GetY(), p.GetMax().GetZ()}
	var n [3]int64
	for i := range 3 {
		if p == nil || lo[i] < reg.Min[i] || hi[i] > reg.Max[i] || lo[i] >= hi[i] {
			return fmt.Errorf("ReadRegion: piece %v..%v lies outside the box %v..%v", lo, hi, reg.Min, reg.Max)
		}
		n[i] = int64(hi[i] - lo[i])
	}
	data := m.GetData()
	if int64(len(data)) != n[0]*n[1]*n[2]*vs {
		return fmt.Errorf("ReadRegion: piece %v..%v holds %d bytes, want %d", lo, hi, len(data), n[0]*n[1]*n[2]*vs)
	}
	s := reg.Shape()
	w, h := int64(s.X), int64(s.Y)
	at := func(y, z int64) int64 { // byte offset of voxel (lo.x, y, z) in the box
		return ((z-int64(reg.Min[2]))*h+(y-int64(reg.Min[1])))*w*vs + (int64(lo[0])-int64(reg.Min[0]))*vs
	}
	run, rows := n[0]*vs, n[1] // one line per write
	if n[0] == w {
		run, rows = n[0]*n[1]*vs, 1 // whole rows of a slice are contiguous
		if n[1] == h {
			run = int64(len(data)) // and so are whole slices
		}
	}
	for i := int64(0); i*run < int64(len(data)); i++ {
		y, z := int64(lo[1]), int64(lo[2])+i
		if rows > 1 {
			y, z = int64(lo[1])+i%rows, int64(lo[2])+i/rows
		}
		if _, err := dst.WriteAt(data[i*run:(i+1)*run], at(y, z)); err != nil {
			return err
		}
	}
	return nil
}

// regionOf describes the box of the first ReadRegion message.
func regionOf(lod uint32, m *ldmv1.ReadRegionResponse) (*Region, error) {
	v, b := m.GetVolume(), m.GetBox()
	if v == nil || b == nil {
		return nil, errors.New("ReadRegion: the first message does not describe the box")
	}
	meta := apiconv.MetaFromAPI(v)
	r := &Region{
		Volume: v, Lod: lod, DataType: meta.DataType, Space: meta.Space,
		Min: [3]uint32{b.GetMin().GetX(), b.GetMin().GetY(), b.GetMin().GetZ()},
		Max: [3]uint32{b.GetMax().GetX(), b.GetMax().GetY(), b.GetMax().GetZ()},
	}
	s := r.Shape()
	r.Bytes = int64(s.X) * int64(s.Y) * int64(s.Z) * int64(meta.DataType.Size())
	if r.Bytes == 0 || uint64(r.Bytes) != m.GetTotalBytes() {
		return nil, fmt.Errorf("ReadRegion: box %v..%v of %s is %d bytes, the server says %d", r.Min, r.Max, meta.DataType, r.Bytes, m.GetTotalBytes())
	}
	r.Transform = RegionAffine(meta, lod, r.Min)
	return r, nil
}

// ReadRegionFile reads the box req names into a NIfTI-1 (.nii) or NRRD
// (.nrrd) file at path, with the box's voxel-to-world transform (see
// Region.Transform) in the file's own fields, so other tools place it
// where it lies in the volume, and a NIfTI import's scl_slope and
// scl_inter (the labels nifti.scl_slope and nifti.scl_inter) in a NIfTI
// file. The file appears only when it is complete.
func (e Exporter) ReadRegionFile(ctx context.Context, path string, req *ldmv1.ReadRegionRequest) (*Region, error) {
	if _, err := volfile.WriteFormat(path); err != nil {
		return nil, err
	}
	var w *volfile.Writer
	reg, err := e.ReadRegion(ctx, req, func(r *Region) (io.WriterAt, error) {
		h := volfile.Header{Shape: r.Shape(), DataType: r.DataType, Transform: r.Transform, Space: r.Space}
		// The scaling of a NIfTI import (kept as labels) goes back with it.
		if sl, err := strconv.ParseFloat(r.Volume.GetLabels()["nifti.scl_slope"], 64); err == nil && sl != 0 {
			h.ScaleSlope = sl
			h.ScaleInter, _ = strconv.ParseFloat(r.Volume.GetLabels()["nifti.scl_inter"], 64)
		}
		var err error
		w, err = volfile.Create(path, h)
		return w, err
	})
	if w == nil {
		return reg, err
	}
	if err != nil {
		w.Abort()
		return reg, err
	}
	return reg, w.Close()
}
