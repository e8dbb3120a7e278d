package server

import (
	"bytes"
	"net/http"
	"net/url"

	"google.golang.org/protobuf/proto"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
)

// viewerVolume returns the web.Options.Volume of a server whose whole
// handler (middleware, authentication, interceptors, the API) is *h: it
// calls GetVolume through that handler as the page request r, with r's
// credentials (its headers, share token, client certificate and peer
// address), so the page embeds only what the same call from the page
// would return.
func viewerVolume(h *http.Handler) func(r *http.Request, name string) ([]byte, bool) {
	return func(r *http.Request, name string) ([]byte, bool) {
		body, err := proto.Marshal(&ldmv1.GetVolumeRequest{Name: name})
		if err != nil {
			return nil, false
		}
		req := r.Clone(r.Context())
		req.Method = http.MethodPost
		req.URL = &url.URL{Path: ldmv1connect.VolumeServiceGetVolumeProcedure}
		req.RequestURI = req.URL.RequestURI()
		req.Host = r.Host
		req.Header.Del("If-None-Match")
		req.Header.Del("If-Modified-Since")
		req.Header.Del("Accept-Encoding")
		req.Header.Del("Range")
		req.Header.Set("Content-Type", "application/proto")
		req.Header.Set("Connect-Protocol-Version", "1")
		req.ContentLength = int64(len(body))
		req.Body = http.NoBody
		if len(body) > 0 {
			req.Body = readCloser{bytes.NewReader(body)}
		}
		rec := &recorder{header: http.Header{}, code: http.StatusOK}
		(*h).ServeHTTP(rec, req)
		if rec.code != http.StatusOK || rec.header.Get("Content-Type") != "application/proto" {
			return nil, false
		}
		return rec.body.Bytes(), true
	}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// recorder is the http.ResponseWriter of an in-process call.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
	wrote  bool
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
}

func (w *recorder) Write(p []byte) (int, error) {
	w.wrote = true
	return w.body.Write(p)
}
