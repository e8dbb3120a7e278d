package service

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
)

// Cross-origin rules (Config.CORSOrigins).
//
// A request is same-origin when its Origin header names the host and port
// the request was sent to (its Host header; the scheme is not compared, so
// a proxy may terminate TLS), or when it has no Origin and its
// Sec-Fetch-Site header is absent, "same-origin" or "none". Programs that
// are not browsers (the CLI, gRPC clients) send neither header and are
// same-origin. Every other request is cross-origin, and the server itself
// decides whether it is served, before anything reads its body:
//
//   - With no CORSOrigins (the default), read-only procedures (corsReads)
//     answer any origin with "Access-Control-Allow-Origin: *", so that
//     third-party viewers can read tiles and bricks, and every other
//     procedure (anything that writes or administers) is same-origin only.
//   - With CORSOrigins, only the listed origins may call, reads and writes
//     alike; "*" in the list allows every origin for every procedure.
//
// A cross-origin request that is not allowed fails with PermissionDenied
// (HTTP 403) without reaching the handler, whatever its method or content
// type, so a "simple" cross-origin POST (text/plain or a form body, which
// a browser sends without a preflight) cannot write either. A preflight
// that is not allowed gets 403 without CORS headers. Credentials
// (cookies) are never allowed.

// corsAny is the CORSOrigins entry that allows every origin.
const corsAny = "*"

// corsReads are the procedures that only read, which any origin may call
// when Config.CORSOrigins is empty.
var corsReads = map[string]bool{
	ldmv1connect.TileServiceReadTileProcedure:                        true,
	ldmv1connect.TileServiceReadTileStreamProcedure:                  true,
	ldmv1connect.VolumeServiceGetVolumeProcedure:                     true,
	ldmv1connect.VolumeServiceListVolumesProcedure:                   true,
	ldmv1connect.VolumeServiceGetBrickProcedure:                      true,
	ldmv1connect.VolumeServiceStreamBricksProcedure:                  true,
	ldmv1connect.ClusterServiceGetServersProcedure:                   true,
	"/grpc.health.v1.Health/Check":                                   true,
	"/grpc.health.v1.Health/Watch":                                   true,
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      true,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": true,
}

// corsAllowHeaders are the request headers the Connect, gRPC-Web and
// conditional-GET protocols use.
var corsAllowHeaders = strings.Join([]string{
	"Content-Type", "Connect-Protocol-Version", "Connect-Timeout-Ms",
	"Connect-Accept-Encoding", "Connect-Content-Encoding", "Accept-Encoding",
	"Content-Encoding", "Grpc-Timeout", "X-Grpc-Web", "X-User-Agent",
	"Authorization", "If-None-Match",
}, ", ")

// corsExposeHeaders are the response headers browsers may read.
var corsExposeHeaders = strings.Join([]string{
	"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin",
	"Content-Encoding", "Connect-Content-Encoding", "ETag", LeaderHeader,
}, ", ")

// checkCORSOrigins validates Config.CORSOrigins: each entry is "*",
// "null" or an origin (scheme://host[:port], http or https, no path).
func checkCORSOrigins(origins []string) error {
	for _, o := range origins {
		if o == "" {
			return errors.New("service: Config.CORSOrigins has an empty origin")
		}
		if o == corsAny || o == "null" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("service: CORS origin %q: want scheme://host[:port] (http or https, no path) or %q", o, corsAny)
		}
	}
	return nil
}

// corsPolicy decides which origins may call which procedures.
type corsPolicy struct {
	list    map[string]bool // normalized origins; nil means the default
	any     bool            // "*" is listed
	errs    *connect.ErrorWriter
	handler http.Handler
}

// newCORS applies the cross-origin rules above to every request and adds
// the CORS response headers. origins must have passed checkCORSOrigins.
func newCORS(origins []string, next http.Handler) http.Handler {
	p := &corsPolicy{errs: connect.NewErrorWriter(), handler: next}
	if len(origins) > 0 {
		p.list = map[string]bool{}
		for _, o := range origins {
			if o == corsAny {
				p.any = true
			}
			p.list[normalizeOrigin(o)] = true
		}
	}
	return p
}

// normalizeOrigin lowercases an origin and drops a trailing slash, as
// browsers serialize the Origin header.
func normalizeOrigin(o string) string { return strings.TrimSuffix(strings.ToLower(o), "/") }

// allowOrigin returns the Access-Control-Allow-Origin value for a
// cross-origin call of procedure from origin, and whether it is allowed.
func (p *corsPolicy) allowOrigin(origin, procedure string) (string, bool) {
	switch {
	case p.list == nil && corsReads[procedure]:
		return corsAny, true
	case p.list == nil:
		return "", false
	case p.any:
		return corsAny, true
	case origin != "" && p.list[normalizeOrigin(origin)]:
		return origin, true
	}
	return "", false
}

func (p *corsPolicy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Every response varies with Origin, also one to a request without
	// it: a shared cache must not answer a browser with a cached GET
	// response that lacks the CORS headers (tile reads are cacheable for a
	// year).
	h := w.Header()
	h.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if sameOrigin(r, origin) {
		p.handler.ServeHTTP(w, r)
		return
	}
	allow, ok := p.allowOrigin(origin, r.URL.Path)
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	if !ok {
		if origin == "" {
			origin = "a " + r.Header.Get("Sec-Fetch-Site") + " page"
		}
		err := connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
			"cross-origin call of %s from %s refused: the server allows only calls from its own origin here; start it with --cors-origin to allow another origin",
			r.URL.Path, origin))
		if preflight {
			http.Error(w, err.Message(), http.StatusForbidden)
			return
		}
		_ = p.errs.Write(w, r, err)
		return
	}
	h.Set("Access-Control-Allow-Origin", allow)
	if preflight {
		h.Set("Access-Control-Allow-Methods", "GET, POST")
		h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		h.Set("Access-Control-Max-Age", "7200")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
	p.handler.ServeHTTP(w, r)
}

// sameOrigin reports whether r comes from the server's own origin, or
// from a program that is not a browser: see the rules above.
func sameOrigin(r *http.Request, origin string) bool {
	if origin == "" {
		switch r.Header.Get("Sec-Fetch-Site") {
		case "", "same-origin", "none":
			return true
		}
		return false
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return false
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false // "null" and anything unparsable
	}
	return strings.EqualFold(withPort(u.Host, u.Scheme), withPort(r.Host, u.Scheme))
}

// withPort returns host:port with the scheme's default port when hostport
// has none.
func withPort(hostport, scheme string) string {
	if _, _, err := net.SplitHostPort(hostport); err == nil {
		return hostport
	}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(hostport, "[]"), port)
}
