package auth

import (
	"context"
	"errors"
	"net/http"

	"connectrpc.com/connect"
)

// AuthorizeHTTP authenticates a plain HTTP request (one that no Connect
// handler serves: the OME-Zarr and Neuroglancer views of a volume) from
// its headers and TLS state, with the same authenticators as every call
// (bearer and share tokens, Basic, client certificates), and checks that
// the caller may do act on obj under the same policy. A share identity may
// read its one volume only, as in Authorizer.Allow. It returns the
// request's context with the caller's Identity.
//
// The error is a *connect.Error: Unauthenticated for credentials that are
// wrong or missing where they are needed (the anonymous subject denied),
// PermissionDenied for a known caller who may not, ResourceExhausted when
// the Basic limit refuses a check, Internal when the policy fails.
// Requests whose path is listed in Config.Public pass without a check.
func (a *Auth) AuthorizeHTTP(r *http.Request, obj, act string) (context.Context, error) {
	ctx := r.Context()
	if a.isPublic(r.URL.Path) {
		return ctx, nil
	}
	ctx = withRequestTLS(ctx, r)
	if _, ok := IdentityFrom(ctx); !ok {
		id, err := a.authenticate(ctx, r.URL.Path, r.Header)
		if err != nil {
			return nil, err
		}
		ctx = WithIdentity(ctx, id)
	}
	c := callerFrom(ctx)
	d, err := a.authz.allowCaller(c, obj, act)
	if err != nil {
		a.log.Error("authorization failed", logSubject, c.id.Subject, logProcedure, r.URL.Path, logObject, obj, logAction, act, "error", err)
		return nil, connect.NewError(connect.CodeInternal, errors.New("authorization failed"))
	}
	if !d.Allowed {
		a.log.Info("permission denied", logSubject, c.id.Subject, logMethod, c.id.Method, logProcedure, r.URL.Path, logObject, obj, logAction, act)
		return nil, denial(c.id, obj, act)
	}
	return ctx, nil
}

// withRequestTLS returns ctx with r's TLS connection state where
// Middleware puts it, unless ctx already has one.
func withRequestTLS(ctx context.Context, r *http.Request) context.Context {
	if r.TLS != nil && TLSFrom(ctx) == nil {
		ctx = context.WithValue(ctx, tlsKey{}, r.TLS)
	}
	return ctx
}
