package auth

import (
	"errors"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
)

// authError is the error a client gets for credentials that failed:
//
//	ErrRateLimited   ResourceExhausted, with google.rpc.RetryInfo and a
//	                 Retry-After header (seconds)
//	ErrExpired       Unauthenticated, saying that the token expired
//	anything else    Unauthenticated "invalid credentials", which tells
//	                 nothing of what was wrong
func authError(err error) *connect.Error {
	var rl *RateLimitError
	if errors.As(err, &rl) {
		ce := connect.NewError(connect.CodeResourceExhausted, err)
		if d, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(rl.RetryAfter)}); derr == nil {
			ce.AddDetail(d)
		}
		ce.Meta().Set("Retry-After", strconv.Itoa(max(1, int(rl.RetryAfter.Seconds()+0.5))))
		return ce
	}
	if errors.Is(err, ErrExpired) {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("the token has expired: create a new one with `ldm token create`"))
	}
	return connect.NewError(connect.CodeUnauthenticated, errors.New("invalid credentials"))
}
