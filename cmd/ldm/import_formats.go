package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/volfile"
)

// fileFlags are the flags of `ldm import` for files with a header (NIfTI-1,
// NRRD). Shape, data type, spacing and byte order come from the header.
type fileFlags struct {
	format    string // auto, raw, nifti, nrrd
	timePoint int    // the 3D volume of a 4D file; -1 means none chosen
}

func (f *fileFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.format, "format", "auto", "file format: auto (NIfTI-1 and NRRD are recognised by their content, anything else is raw), raw, nifti or nrrd")
	fs.IntVar(&f.timePoint, "time", -1, "for a 4D NIfTI or NRRD file: the time point (from 0) to import")
}

// headered reports whether path is to be read as a NIfTI-1 or NRRD file: by
// --format, or with --format auto by its first bytes.
func (f *fileFlags) headered(path string) (bool, error) {
	switch f.format {
	case "raw":
		return false, nil
	case "nifti", "nrrd":
		return true, nil
	case "auto":
	default:
		return false, usageError{fmt.Errorf("--format %q: want auto, raw, nifti or nrrd", f.format)}
	}
	k, err := sniff(path)
	return k != volfile.FormatRaw, err
}

// sniff guesses a file's format from its first bytes: NRRD magic, a NIfTI
// sizeof_hdr (348, or 540 for NIfTI-2, which Open rejects by name) in either
// byte order, or a gzip stream that starts with one.
func sniff(path string) (volfile.Format, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	head, _ := br.Peek(4)
	if bytes.HasPrefix(head, []byte{0x1f, 0x8b}) {
		head = gunzipHead(br)
	}
	switch {
	case bytes.HasPrefix(head, []byte("NRRD")):
		return volfile.FormatNRRD, nil
	case len(head) == 4:
		for _, n := range []uint32{binary.LittleEndian.Uint32(head), binary.BigEndian.Uint32(head)} {
			if n == 348 || n == 540 {
				return volfile.FormatNIfTI1, nil
			}
		}
	}
	return volfile.FormatRaw, nil
}

// importFile imports a NIfTI-1 or NRRD file as a new volume (or completes
// it, with resume), streaming its voxels. A header that cannot be read, or
// an uncompressed file too short for its header, fails before anything is
// created; data found short or corrupt while streaming (a truncated gzip
// file) fails the import, and the volume this call created is deleted.
func importFile(cmd *cobra.Command, cf *clientFlags, spec *volumeSpec, ff *fileFlags, path, name string, quiet, resume bool, codec importCodec) error {
	for _, fl := range []string{"shape", "dtype"} {
		if cmd.Flags().Changed(fl) {
			return usageError{fmt.Errorf("--%s: %s has a header that gives the shape and data type; leave --%s out", fl, path, fl)}
		}
	}
	for _, fl := range []string{"origin", "orientation", "space"} {
		if cmd.Flags().Changed(fl) {
			return usageError{fmt.Errorf("--%s: %s has a header that gives where the voxels sit (its transform); leave --%s out", fl, path, fl)}
		}
	}
	if ff.timePoint < -1 || int64(ff.timePoint) > math.MaxUint32 {
		return usageError{fmt.Errorf("--time %d: want a time point from 0", ff.timePoint)}
	}
	opts := volfile.Options{}
	if ff.timePoint >= 0 {
		opts = volfile.Options{HasTimePoint: true, TimePoint: uint32(ff.timePoint)}
	}
	im, err := volfile.Open(path, opts)
	if err != nil {
		return fileError(err)
	}
	if want := map[string]volfile.Format{"nifti": volfile.FormatNIfTI1, "nrrd": volfile.FormatNRRD}[ff.format]; ff.format != "auto" && im.Format != want {
		return usageError{fmt.Errorf("--format %s: %s is a %s file", ff.format, path, im.Format)}
	}
	if ff.timePoint >= 0 && im.TimePoints == 1 {
		return usageError{fmt.Errorf("--time %d: %s is a 3D image (no time axis)", ff.timePoint, path)}
	}
	if name == "" {
		if name, err = nameFromPath(path); err != nil {
			return err
		}
	}
	v, err := fileVolume(im, spec, name)
	if err != nil {
		return err
	}
	codec.apply(v)
	voxels, err := im.Voxels()
	if err != nil {
		return fileError(err)
	}
	defer voxels.Close()
	ctx := cmd.Context()
	c, err := cf.connect(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	// Only a volume this call creates is removed on failure: check first
	// that the name is free (CreateVolume fails with AlreadyExists if a
	// volume appears in between).
	existing, err := c.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: name}))
	switch {
	case err == nil && !resume:
		return fmt.Errorf("import %s: volume %q already exists (if an earlier import of it was interrupted, run the same command with --resume; otherwise delete it with 'ldm volume delete %s' or choose another --name)", path, name, name)
	case err == nil:
		if err := codec.checkResume(existing.Msg.GetVolume()); err != nil {
			return err
		}
	case connect.CodeOf(err) != connect.CodeNotFound:
		return c.rpcError("import "+name, err)
	}
	err = runImport(ctx, c, v, voxels, cmd.ErrOrStderr(), quiet, resume)
	ie, msg := explainImport(c, err)
	if ie == nil || !ie.Created && !ie.Resumed {
		return msg
	}
	if ie.Kept {
		return fmt.Errorf("%w (the incomplete volume %q keeps the bricks stored so far: run the same command with --resume to complete it, or delete it with 'ldm volume delete %s')", msg, name, name)
	}
	if ie.DeleteErr != nil {
		return fmt.Errorf("%w (and removing the incomplete volume %q failed: %v; delete it with 'ldm volume delete %s')", msg, name, ie.DeleteErr, name)
	}
	return fmt.Errorf("%w (the incomplete volume %q was removed)", msg, name)
}

// fileVolume builds the volume to create from a file's header and the
// brick, LOD, spacing and label flags (client.VolumeFromFile adds the
// source labels).
func fileVolume(im *volfile.Image, spec *volumeSpec, name string) (*ldmv1.Volume, error) {
	s := *spec
	s.shape = fmt.Sprintf("%dx%dx%d", im.Shape.X, im.Shape.Y, im.Shape.Z)
	s.dtype = im.DataType.String()
	s.labels = map[string]string{}
	for k, v := range spec.labels {
		s.labels[k] = v
	}
	v, err := s.volume(name)
	if err != nil {
		return nil, err
	}
	if spec.spacing == "" {
		v.Spacing = nil // the header's
	}
	return client.VolumeFromFile(im, v), nil
}

// fileError turns a volfile error into a usage error when the file is
// unsupported (so the exit code says "your input"), keeping its message.
func fileError(err error) error {
	if errors.Is(err, volfile.ErrUnsupported) || errors.Is(err, storage.ErrInvalidArgument) {
		return usageError{err}
	}
	return fmt.Errorf("import: %w", err)
}

var nameUnsafe = regexp.MustCompile(`[^a-z0-9._-]+`)

// nameFromPath derives a volume name from a file name: "Brain T1.nii.gz"
// gives "brain-t1".
func nameFromPath(path string) (string, error) {
	base := strings.ToLower(filepath.Base(path))
	for _, ext := range []string{".gz", ".nii", ".nrrd", ".nhdr", ".hdr"} {
		base = strings.TrimSuffix(base, ext)
	}
	name := strings.Trim(nameUnsafe.ReplaceAllString(base, "-"), "-._")
	if len(name) > 64 {
		name = name[:64]
	}
	if err := storage.ValidateName(name); err != nil {
		return "", usageError{fmt.Errorf("--name is required: no volume name can be made from %q (%v)", filepath.Base(path), err)}
	}
	return name, nil
}

// gunzipHead returns the first four decompressed bytes of a gzip stream
// (fewer if it is shorter or corrupt).
func gunzipHead(r *bufio.Reader) []byte {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil
	}
	b := make([]byte, 4)
	n, _ := io.ReadFull(zr, b)
	return b[:n]
}
