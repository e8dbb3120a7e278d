package service

import (
	"net/http"

	"connectrpc.com/connect"
)

// gate authenticates every call from its headers with
// Config.Authenticate before anything reads its body, then serves it with
// full (authenticated callers) or small (the others), whose handlers
// differ only in the largest request message they decompress. A caller
// whose credentials fail gets the error in its protocol (Connect, gRPC or
// gRPC-Web) and the server reads none of the body, so a compressed body
// is never expanded for a caller who is refused. Without Authenticate,
// full serves every call.
func (s *Server) gate(full, small http.Handler) http.Handler {
	if s.authenticate == nil {
		return full
	}
	errs := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, authenticated, err := s.authenticate(r)
		if err != nil {
			ce := connectError(err)
			s.log.InfoContext(r.Context(), "rpc", logKeyProcedure, r.URL.Path, logKeyPeer, r.RemoteAddr, logKeyCode, connect.CodeOf(ce).String(), logKeyError, ce.Error())
			_ = errs.Write(w, r, ce)
			return
		}
		r = r.WithContext(ctx)
		if authenticated {
			full.ServeHTTP(w, r)
		} else {
			small.ServeHTTP(w, r)
		}
	})
}
