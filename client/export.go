package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/zstdcodec"
	"github.com/xcheng85/go-ldm/omezarr"
	"github.com/xcheng85/go-ldm/storage"
)

// ExportStats describes an export.
type ExportStats struct {
	Volume *ldmv1.Volume
	// Bricks and Bytes count the chunks written (bricks never written
	// have no chunk).
	Bricks  int
	Bytes   int64
	Elapsed time.Duration
}

// ExportZarr writes a local OME-Zarr copy of a volume into dir (which must
// not exist, or be empty): every level of detail as a Zarr v2 array with
// OME-NGFF 0.4 metadata, one chunk file per stored brick, written as
// StreamBricks delivers them (the client holds one brick at a time). The
// metadata is the server's OME-Zarr view's (Exporter.View), or package
// omezarr's for a server without the view; it is written last, so a
// directory without .zattrs is an export that did not finish.
func (e Exporter) ExportZarr(ctx context.Context, volume, dir string) (ExportStats, error) {
	var st ExportStats
	res, err := e.Volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: volume}))
	if err != nil {
		return st, err
	}
	st.Volume = res.Msg.GetVolume()
	meta := apiconv.MetaFromAPI(st.Volume)
	if _, ok := omezarr.DType(meta.DataType); !ok {
		return st, fmt.Errorf("volume %s: data type %v cannot be written as Zarr", volume, meta.DataType)
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return st, fmt.Errorf("%s is not empty: export into a new directory", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return st, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return st, err
	}
	bs := meta.BrickShape
	if bs.X == 0 || bs.Y == 0 || bs.Z == 0 {
		bs = storage.DefaultBrickShape
	}
	brickBytes := int64(bs.X) * int64(bs.Y) * int64(bs.Z) * int64(meta.DataType.Size())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := e.Volumes.StreamBricks(ctx, connect.NewRequest(&ldmv1.StreamBricksRequest{
		Volume: volume, Order: ldmv1.BrickOrder_BRICK_ORDER_FINE_TO_COARSE,
	}))
	if err != nil {
		return st, err
	}
	defer stream.Close()
	start := time.Now()
	made := map[string]bool{}
	for stream.Receive() {
		m := stream.Msg()
		t := m.GetTile()
		if t.GetKey() == nil {
			continue
		}
		// Chunks are written as the server stores them: a zstd volume's
		// frames, which its Zarr metadata names (omezarr).
		if t.GetCodec() == ldmv1.Codec_CODEC_ZSTD {
			if err := zstdcodec.CheckHeader(t.GetValue(), int(brickBytes)); err != nil {
				return st, fmt.Errorf("brick %v of %s: %w", t.GetKey(), volume, err)
			}
		} else if int64(len(t.GetValue())) != brickBytes {
			return st, fmt.Errorf("brick %v of %s has %d bytes, a %dx%dx%d %s brick has %d", t.GetKey(), volume, len(t.GetValue()), bs.X, bs.Y, bs.Z, meta.DataType, brickBytes)
		}
		p := filepath.Join(dir, filepath.FromSlash(omezarr.ChunkPath(apiconv.KeyFromAPI(t.GetKey()))))
		if d := filepath.Dir(p); !made[d] {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return st, err
			}
			made[d] = true
		}
		if err := os.WriteFile(p, t.GetValue(), 0o644); err != nil {
			return st, err
		}
		st.Bricks++
		st.Bytes += brickBytes
		st.Elapsed = time.Since(start)
		if e.Progress != nil {
			e.Progress(Progress{Volume: volume, Bricks: int(m.GetTotal()), BricksDone: st.Bricks,
				Bytes: int64(m.GetTotal()) * brickBytes, BytesDone: st.Bytes, Elapsed: st.Elapsed})
		}
	}
	if err := stream.Err(); err != nil {
		return st, err
	}
	// The metadata: the group and every level's array, then .zattrs; the
	// server's own view's documents when it has the view.
	names := []string{".zgroup"}
	for l := range max(meta.LODCount, 1) {
		names = append(names, fmt.Sprint(l)+"/.zarray")
	}
	names = append(names, ".zattrs")
	docs, err := e.viewMetadata(ctx, volume, names)
	if err != nil {
		return st, err
	}
	if docs == nil {
		docs = map[string][]byte{}
		add := func(name string, doc any) error {
			b, err := json.MarshalIndent(doc, "", "  ")
			docs[name] = append(b, '\n')
			return err
		}
		if err := add(".zgroup", omezarr.Group()); err != nil {
			return st, err
		}
		for l := range max(meta.LODCount, 1) {
			a, err := omezarr.Array(meta, l)
			if err != nil {
				return st, err
			}
			if err := add(fmt.Sprint(l)+"/.zarray", a); err != nil {
				return st, err
			}
		}
		if err := add(".zattrs", omezarr.Attrs(meta)); err != nil {
			return st, err
		}
	}
	for _, name := range names {
		if err := writeFileAtomic(filepath.Join(dir, filepath.FromSlash(name)), docs[name]); err != nil {
			return st, err
		}
	}
	st.Elapsed = time.Since(start)
	return st, nil
}

// ZarrView is where a server serves its OME-Zarr view (/zarr/VOLUME/) and
// how to reach it: the export writes the view's metadata documents as
// they are, so a local copy and the view describe a volume alike.
type ZarrView struct {
	BaseURL string       // the server, without a trailing slash
	HTTP    *http.Client // nil means http.DefaultClient
	// Authorization is the request's Authorization header ("" for none).
	Authorization string
}

// viewMetadata fetches the documents names (paths below /zarr/VOLUME/)
// from the server's view. It returns nil, nil when the Exporter has no
// view or the server has none (404 for the first document).
func (e Exporter) viewMetadata(ctx context.Context, volume string, names []string) (map[string][]byte, error) {
	if e.View == nil {
		return nil, nil
	}
	hc := e.View.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	docs := map[string][]byte{}
	for i, name := range names {
		u := e.View.BaseURL + "/zarr/" + url.PathEscape(volume) + "/" + name
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		if e.View.Authorization != "" {
			req.Header.Set("Authorization", e.View.Authorization)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusNotFound && i == 0 {
			return nil, nil // a server without the views
		}
		if resp.StatusCode != http.StatusOK || !json.Valid(b) {
			return nil, fmt.Errorf("GET %s: %s: %.200s", u, resp.Status, b)
		}
		docs[name] = b
	}
	return docs, nil
}

// writeFileAtomic writes b to path through a temporary file renamed into
// place.
func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
