package auth

import (
	"context"
	"net/http"
)

// AuthenticateHTTP authenticates a call from its headers and TLS state
// alone, before its body is read, for service.Config.Authenticate. It
// returns the request's context with the caller's Identity (which the
// authentication interceptor then keeps instead of authenticating again),
// and whether the caller is authenticated (not anonymous). Credentials
// that are present but wrong fail with Unauthenticated. Public procedures
// pass as unauthenticated without a look at their credentials.
func (a *Auth) AuthenticateHTTP(r *http.Request) (context.Context, bool, error) {
	ctx := r.Context()
	procedure := r.URL.Path
	if a.isPublic(procedure) {
		return ctx, false, nil
	}
	ctx = withRequestTLS(ctx, r)
	id, err := a.authenticate(ctx, procedure, r.Header)
	if err != nil {
		return nil, false, err
	}
	return WithIdentity(ctx, id), !id.Anonymous(), nil
}
