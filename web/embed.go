// Package web holds the volume viewer: TypeScript sources in src/, the
// generated API client in src/gen, and the committed esbuild bundle in dist/
// that this package embeds and serves.
//
// The bundle is rebuilt with `npm run build` (or `make check-bundle`, which
// also fails when the committed bundle is stale). The viewer talks only to
// the server that serves it: Handler sets a Content-Security-Policy that
// forbids any other origin.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

//go:embed dist
var dist embed.FS

// FS returns the viewer's static files (index.html, app.js, stream.js,
// style.css, and the zstd decoder zstd_wasm.HASH.js that app.js and
// stream.js import when a zstd volume is open).
func FS() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // dist is embedded at build time; Sub on it cannot fail
	}
	return sub
}

// csp allows the page to load its own files and call its own origin only.
// The zstd decoder is WebAssembly ('wasm-unsafe-eval' lets the page compile
// it, nothing else) that loads from a data: URL in its own file (connect-src
// data:, which reaches no server).
const csp = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self' data:; worker-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Options configure HandlerWith.
type Options struct {
	// Volume, when set, returns the binary ldm.v1.GetVolumeResponse of the
	// named volume as the page request r may see it (with its credentials),
	// or ok false (no such volume, not allowed, any error). The page asked
	// for with ?volume=NAME then carries that response, so the viewer opens
	// the volume without a GetVolume round trip first.
	Volume func(r *http.Request, name string) (resp []byte, ok bool)
}

// VolumeScriptID is the id of the script element (type application/json)
// that carries the volume named in the page's URL: {"name": NAME,
// "getVolume": base64 of the binary GetVolumeResponse}.
const VolumeScriptID = "ldm-volume"

// Handler serves the viewer: "/" is index.html, other paths are files of
// FS, anything else is 404. Responses carry a strong ETag (a hash of the
// file) with Cache-Control: no-cache, so browsers revalidate cheaply and
// never run a stale bundle after an upgrade; a file whose name carries the
// hash of its content (NAME.HASH.EXT, HASH the first 24 hex digits of its
// SHA-256, checked here) cannot go stale, and browsers may keep it a year
// without asking (immutable). It is safe for concurrent use.
func Handler() http.Handler { return HandlerWith(Options{}) }

// HandlerWith is Handler with options: with Options.Volume, the page asked
// for with ?volume=NAME embeds that volume's metadata (a page that is not
// cached: Cache-Control no-store, no ETag), and for a zstd volume an
// async module script of the decoder's file, which the browser then
// fetches while it fetches app.js and which starts compiling the decoder
// as soon as it has arrived.
func HandlerWith(o Options) http.Handler { return handler(FS(), o) }

// handler is HandlerWith serving files.
func handler(files fs.FS, o Options) http.Handler {
	etags := map[string]string{}
	immutable := map[string]bool{}
	decoder := ""
	_ = fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:12])
		etags[p] = `"` + h + `"`
		immutable[p] = contentNamed(p, h)
		if ok, _ := path.Match("zstd_wasm.*.js", p); ok {
			decoder = p
		}
		return nil
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" {
			name = "index.html"
		}
		tag, ok := etags[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		f, err := files.Open(name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if name == "index.html" && o.Volume != nil {
			if page := withVolume(f, r, o.Volume, decoder); page != nil {
				h.Set("Cache-Control", "no-store")
				h.Set("Content-Type", "text/html; charset=utf-8")
				http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(page))
				return
			}
		}
		h.Set("ETag", tag)
		if immutable[name] {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		http.ServeContent(w, r, name, time.Time{}, f.(io.ReadSeeker))
	})
}

// contentNamed reports whether the file at p is named NAME.HASH.EXT with
// HASH its content's hash h.
func contentNamed(p, h string) bool {
	parts := strings.Split(path.Base(p), ".")
	return len(parts) >= 3 && parts[len(parts)-2] == h
}

// withVolume returns index.html (read from f) with the metadata of the
// volume named by r's ?volume= in a data script before the page's script,
// or nil when there is no such name or volume returns nothing for it. For
// a zstd volume an async module script of decoder (the decoder's file, if
// not empty) comes first.
func withVolume(f fs.File, r *http.Request, volume func(*http.Request, string) ([]byte, bool), decoder string) []byte {
	name := r.URL.Query().Get("volume")
	if name == "" {
		return nil
	}
	resp, ok := volume(r, name)
	if !ok {
		return nil
	}
	page, err := io.ReadAll(f)
	if err != nil {
		return nil
	}
	// json.Marshal escapes <, > and &, so the data cannot end the element.
	data, err := json.Marshal(struct {
		Name      string `json:"name"`
		GetVolume string `json:"getVolume"`
	}{name, base64.StdEncoding.EncodeToString(resp)})
	if err != nil {
		return nil
	}
	const anchor = `<script type="module"`
	i := bytes.Index(page, []byte(anchor))
	if i < 0 {
		return nil
	}
	tag := `<script type="application/json" id="` + VolumeScriptID + `">` + string(data) + "</script>\n"
	var gv ldmv1.GetVolumeResponse
	if decoder != "" && proto.Unmarshal(resp, &gv) == nil && gv.GetVolume().GetCodec() == ldmv1.Codec_CODEC_ZSTD {
		tag = `<script type="module" async src="` + decoder + `"></script>` + "\n" + tag
	}
	return append(append(append([]byte{}, page[:i]...), tag...), page[i:]...)
}
