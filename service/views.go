package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/storage"
)

// Read-only views of every volume in the open layouts that other tools
// read over plain HTTP, served by Server.Views:
//
//	/zarr/VOLUME/          OME-Zarr, Zarr v2 with OME-NGFF 0.4:
//	  .zgroup, .zattrs       the group and its multiscales
//	  LOD/.zarray, .zattrs   one array per level of detail
//	  LOD/Z/Y/X              a chunk ("/" separator)
//	/zarr3/VOLUME/         OME-Zarr, Zarr v3 with OME-NGFF 0.5:
//	  zarr.json              the group, attributes.ome.multiscales
//	  LOD/zarr.json          one array per level
//	  LOD/c/Z/Y/X            a chunk (default key encoding, "/")
//	/precomputed/VOLUME/   Neuroglancer precomputed:
//	  info                   one scale per level, raw encoding
//	  LOD/x0-x1_y0-y1_z0-z1  a chunk, cut to the level's true size
//
// The two Zarr versions are separate hierarchies: a client that finds both
// zarr.json and .zgroup in one may refuse it (Neuroglancer does).
//
// A Zarr chunk is a stored brick as it is: the brick shape, zero-padded at
// the edge, little-endian, x fastest, which is Zarr's C order for the
// shape [z, y, x]; no compressor for a raw volume, and for a zstd volume
// the stored frame as it is, which the metadata names (the v2 compressor
// zstd, the v3 codecs bytes then zstd). A brick never written answers 404 and
// the client uses the fill value (0). A precomputed chunk is the brick's
// box within the level (an edge chunk is copied out of its padded brick),
// raw voxels: a zstd brick is decoded on the server.
//
// Every response, errors included, carries the CORS headers the API gives
// reads (see cors.go): any origin by default, the listed origins with
// Config.CORSOrigins. GET and HEAD read, OPTIONS answers preflights. Each
// request is authorized as a read of the volume (ViewConfig.Authorize)
// before anything of the volume is looked at. Chunks carry the ETag of the
// brick's tile in the volume's generation and are revalidated (no-cache),
// as GetBrick's GET; metadata carries an ETag of the generation. Corrupt
// bricks are never served (500). Bad paths (an unknown volume, a level
// past the pyramid, a chunk outside the grid, malformed names, traversal)
// get 404 or 400.

// View path prefixes.
const (
	ZarrPrefix        = "/zarr/"  // Zarr v2, OME-NGFF 0.4
	Zarr3Prefix       = "/zarr3/" // Zarr v3, OME-NGFF 0.5
	PrecomputedPrefix = "/precomputed/"
)

// viewsVersion changes the ETag of view metadata when its content changes
// with a new version of the server.
const viewsVersion = "v1"

// ViewConfig configures Server.Views.
type ViewConfig struct {
	// Authorize decides whether r may read volume, from r's credentials.
	// It returns the context the request is served in, or an error,
	// normally a *connect.Error (Unauthenticated, PermissionDenied); the
	// code decides the HTTP status. Nil lets every request read (a server
	// without authentication).
	Authorize func(r *http.Request, volume string) (context.Context, error)
	// CORSOrigins are the server's Config.CORSOrigins: empty lets any
	// origin read, otherwise only the listed ones ("*" for all).
	CORSOrigins []string
}

// ViewPaths are the path prefixes the handler of Views serves.
func ViewPaths() []string { return []string{ZarrPrefix, Zarr3Prefix, PrecomputedPrefix} }

// views serves the OME-Zarr and precomputed views.
type views struct {
	s         *Server
	authorize func(r *http.Request, volume string) (context.Context, error)
	cors      *corsPolicy
}

// Views returns the handler of the OME-Zarr and Neuroglancer precomputed
// views of the volumes (see above). Mount it at each of ViewPaths.
func (s *Server) Views(cfg ViewConfig) (http.Handler, error) {
	if err := checkCORSOrigins(cfg.CORSOrigins); err != nil {
		return nil, err
	}
	p, _ := newCORS(cfg.CORSOrigins, nil).(*corsPolicy)
	return &views{s: s, authorize: cfg.Authorize, cors: p}, nil
}

// viewCORSHeaders are the request headers the views accept cross-origin.
const viewCORSHeaders = "Authorization, If-None-Match, If-Modified-Since, Range, Cache-Control, Pragma"

// viewError is an error with the HTTP status it answers.
type viewError struct {
	status int
	msg    string
}

func (e *viewError) Error() string { return e.msg }

func notFound(format string, args ...any) error {
	return &viewError{status: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
}

func badPath(format string, args ...any) error {
	return &viewError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// codeStatus is the HTTP status of each Connect code, as Connect's own
// protocol maps them.
var codeStatus = map[connect.Code]int{
	connect.CodeCanceled:           499,
	connect.CodeUnknown:            http.StatusInternalServerError,
	connect.CodeInvalidArgument:    http.StatusBadRequest,
	connect.CodeDeadlineExceeded:   http.StatusGatewayTimeout,
	connect.CodeNotFound:           http.StatusNotFound,
	connect.CodeAlreadyExists:      http.StatusConflict,
	connect.CodePermissionDenied:   http.StatusForbidden,
	connect.CodeResourceExhausted:  http.StatusTooManyRequests,
	connect.CodeFailedPrecondition: http.StatusBadRequest,
	connect.CodeAborted:            http.StatusConflict,
	connect.CodeOutOfRange:         http.StatusBadRequest,
	connect.CodeUnimplemented:      http.StatusNotImplemented,
	connect.CodeInternal:           http.StatusInternalServerError,
	connect.CodeUnavailable:        http.StatusServiceUnavailable,
	connect.CodeDataLoss:           http.StatusInternalServerError,
	connect.CodeUnauthenticated:    http.StatusUnauthorized,
}

// writeError answers err as plain text with its status: a *viewError as
// it says, anything else through the one error table (connectError).
func (v *views) writeError(w http.ResponseWriter, r *http.Request, err error) {
	h := w.Header()
	var ve *viewError
	status, msg := http.StatusInternalServerError, ""
	if errors.As(err, &ve) {
		status, msg = ve.status, ve.msg
	} else {
		var ce *connect.Error
		if !errors.As(err, &ce) {
			errors.As(connectError(err), &ce)
		}
		if s, ok := codeStatus[ce.Code()]; ok {
			status = s
		}
		msg = ce.Message()
		for k, vals := range ce.Meta() {
			for _, x := range vals {
				h.Add(k, x)
			}
		}
		switch ce.Code() {
		case connect.CodeUnauthenticated:
			h.Set("WWW-Authenticate", `Bearer realm="go-ldm"`)
		case connect.CodeDataLoss, connect.CodeInternal, connect.CodeUnknown:
			v.s.log.Error("view read failed", "path", r.URL.Path, "error", err)
		}
	}
	h.Del("ETag")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, "%d %s: %s\n", status, http.StatusText(status), msg)
	}
}

func (v *views) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Add("Vary", "Origin")
	h.Set("X-Content-Type-Options", "nosniff")
	origin := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	// The views are reads: they get what cors.go gives reads, also on
	// requests without an Origin (a shared cache may answer a browser).
	allow, ok := v.cors.allowOrigin(origin, readProcedure)
	if !ok && !sameOrigin(r, origin) {
		if preflight {
			http.Error(w, "403 Forbidden: cross-origin read from "+origin+" refused; start the server with --cors-origin to allow it", http.StatusForbidden)
			return
		}
		v.writeError(w, r, &viewError{status: http.StatusForbidden, msg: fmt.Sprintf(
			"cross-origin read of %s from %q refused: the server allows only the origins of --cors-origin", r.URL.Path, origin)})
		return
	}
	if ok {
		h.Set("Access-Control-Allow-Origin", allow)
		h.Set("Access-Control-Expose-Headers", "ETag, Content-Length, Content-Type")
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		h.Set("Allow", "GET, HEAD, OPTIONS")
		if preflight {
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
			h.Set("Access-Control-Allow-Headers", viewCORSHeaders)
			h.Set("Access-Control-Max-Age", "7200")
			// A page on a public origin (a hosted Neuroglancer or vizarr)
			// reading a server on a private address or loopback: Chromium
			// asks first (Private Network Access).
			if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
				h.Set("Access-Control-Allow-Private-Network", "true")
			}
		}
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		h.Set("Allow", "GET, HEAD, OPTIONS")
		v.writeError(w, r, &viewError{status: http.StatusMethodNotAllowed, msg: r.Method + " is not allowed: the views are read-only (GET, HEAD, OPTIONS)"})
		return
	}
	if err := v.serve(w, r); err != nil {
		v.writeError(w, r, err)
	}
}

// readProcedure stands for every read in the CORS rules: the views read
// what GetBrick reads.
const readProcedure = "/ldm.v1.VolumeService/GetBrick"

// viewPath is a parsed view path.
type viewPath struct {
	zarr   int      // 2 or 3 for Zarr, 0 for precomputed
	volume string   // a valid volume name
	rest   []string // the segments after the volume
}

// parseViewPath splits a view path into its format, volume and segments.
// Empty segments (a doubled or trailing slash other than after the
// volume), "." and ".." are refused, so no path names anything outside its
// volume.
func parseViewPath(p string) (viewPath, error) {
	var vp viewPath
	switch {
	case strings.HasPrefix(p, ZarrPrefix):
		vp.zarr, p = 2, p[len(ZarrPrefix):]
	case strings.HasPrefix(p, Zarr3Prefix):
		vp.zarr, p = 3, p[len(Zarr3Prefix):]
	case strings.HasPrefix(p, PrecomputedPrefix):
		p = p[len(PrecomputedPrefix):]
	default:
		return vp, notFound("%s is not a view path (/zarr/VOLUME/..., /zarr3/VOLUME/... or /precomputed/VOLUME/...)", p)
	}
	if p == "" {
		return vp, notFound("no volume named: the views are /zarr/VOLUME/, /zarr3/VOLUME/ and /precomputed/VOLUME/")
	}
	segs := strings.Split(p, "/")
	if len(segs) > 1 && segs[len(segs)-1] == "" && len(segs) == 2 {
		segs = segs[:1] // "VOLUME/"
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return vp, badPath("malformed path %q: empty, \".\" or \"..\" segment", p)
		}
	}
	if storage.ValidateName(segs[0]) != nil {
		return vp, notFound("no volume %q: a volume name matches %s", segs[0], storage.NamePattern)
	}
	vp.volume, vp.rest = segs[0], segs[1:]
	return vp, nil
}

// serve answers a GET or HEAD of a view path.
func (v *views) serve(w http.ResponseWriter, r *http.Request) error {
	vp, err := parseViewPath(r.URL.Path)
	if err != nil {
		return err
	}
	if v.authorize != nil {
		ctx, err := v.authorize(r, vp.volume)
		if err != nil {
			return err
		}
		r = r.WithContext(ctx)
	}
	info, err := v.s.store.Volume(vp.volume)
	if errors.Is(err, storage.ErrNotFound) {
		return notFound("no volume %q on this server (`ldm volume list` lists them)", vp.volume)
	}
	if err != nil {
		return err
	}
	if info.DataType.Size() == 0 {
		return &viewError{status: http.StatusInternalServerError, msg: fmt.Sprintf("volume %q has data type %v, which the views do not know", info.Name, info.DataType)}
	}
	if vp.zarr != 0 {
		return v.serveZarr(w, r, info, vp.zarr, vp.rest)
	}
	return v.servePrecomputed(w, r, info, vp.rest)
}

// parseIndex parses a non-negative decimal without sign or leading zeros
// that fits in uint32.
func parseIndex(s string) (uint32, bool) {
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// parseLevel parses a level segment and checks it against the pyramid.
func parseLevel(info storage.VolumeInfo, s string) (uint32, error) {
	l, ok := parseIndex(s)
	if !ok {
		return 0, notFound("no level %q in volume %q: levels are 0 to %d", s, info.Name, lodCount(info)-1)
	}
	if l >= lodCount(info) {
		return 0, notFound("level %d is past the pyramid of volume %q: levels are 0 to %d", l, info.Name, lodCount(info)-1)
	}
	return l, nil
}

func lodCount(info storage.VolumeInfo) uint32 { return max(info.LODCount, 1) }

func brickShape(info storage.VolumeInfo) storage.Shape {
	if b := info.BrickShape; b.X != 0 && b.Y != 0 && b.Z != 0 {
		return b
	}
	return storage.DefaultBrickShape
}

// metaETag is the entity tag of a metadata document of a volume's
// generation: a volume's metadata never changes within a generation.
func metaETag(info storage.VolumeInfo, doc string) string {
	return `"` + strconv.FormatInt(info.CreatedAt.UnixNano(), 36) + "-" + viewsVersion + "-" + doc + `"`
}

// writeJSON answers a metadata document with its ETag (304 when the
// request already has it).
func writeJSON(w http.ResponseWriter, r *http.Request, etag string, doc any) error {
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return writeBody(w, r, etag, "application/json", append(b, '\n'))
}

// writeBody answers body with its content type and entity tag, revalidated
// on every use (304 when the request already has the tag; no body for
// HEAD).
func writeBody(w http.ResponseWriter, r *http.Request, etag, contentType string, body []byte) error {
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", cacheRevalidate)
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return nil
}

// readBrick reads brick key of info's volume under the read budget and
// calls write with its bytes while the budget holds them. A brick that
// does not exist is a 404; a brick whose size is not the brick shape's is
// corrupt.
func (v *views) readBrick(r *http.Request, info storage.VolumeInfo, key storage.BrickKey, write func(t storage.Tile) error) error {
	rb := &readBuf{budget: v.s.reads}
	defer rb.release()
	t, err := rb.read(r.Context(), func([]byte) (storage.Tile, error) { return v.s.store.Brick(info.Name, key) })
	if errors.Is(err, storage.ErrNotFound) {
		return notFound("brick %d/%d/%d/%d of volume %q was never written: its voxels are the fill value 0", key.LOD, key.Z, key.Y, key.X, info.Name)
	}
	if err != nil {
		return err
	}
	if err := checkStoredBrick(info, key, t.Value); err != nil {
		return err
	}
	return write(t)
}

// checkBrickBytes returns an ErrCorrupt error when brick key of info's
// volume has n bytes, not the size of a brick of its shape.
func checkBrickBytes(info storage.VolumeInfo, key storage.BrickKey, n int) error {
	bs := brickShape(info)
	if want := int(bs.X) * int(bs.Y) * int(bs.Z) * info.DataType.Size(); n != want {
		return fmt.Errorf("%w: brick %v of volume %q has %d bytes, a %dx%dx%d %s brick has %d", storage.ErrCorrupt, key, info.Name, n, bs.X, bs.Y, bs.Z, info.DataType, want)
	}
	return nil
}

// writeChunk answers chunk bytes of the brick tile t with the tile's ETag
// (304 when the request already has it).
func writeChunk(w http.ResponseWriter, r *http.Request, info storage.VolumeInfo, t storage.Tile, data []byte) error {
	return writeBody(w, r, tileETag(info.CreatedAt.UnixNano(), t.Offset), "application/octet-stream", data)
}
