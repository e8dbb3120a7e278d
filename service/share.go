package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// ShareIssuer makes share tokens for CreateShare (auth.Shares through an
// adapter of the server). IssueShare returns the share's id, its token and
// when it expires; a ttl it refuses is an error wrapping
// storage.ErrInvalidArgument.
type ShareIssuer interface {
	IssueShare(volume string, ttl time.Duration) (id, token string, expires time.Time, err error)
}

// CreateShare issues a share token for a volume that exists.
func (h *volumeHandler) CreateShare(_ context.Context, req *connect.Request[ldmv1.CreateShareRequest]) (*connect.Response[ldmv1.CreateShareResponse], error) {
	if h.s.shares == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("share links are not configured on this server: start it with --share-key FILE"))
	}
	info, err := h.s.store.Volume(req.Msg.GetVolume())
	if err != nil {
		return nil, connectError(err)
	}
	ttl := req.Msg.GetTtl().AsDuration()
	if req.Msg.GetTtl() != nil {
		if err := req.Msg.GetTtl().CheckValid(); err != nil {
			return nil, connectError(withField("ttl", fmt.Errorf("%w: %v", storage.ErrInvalidArgument, err)))
		}
	}
	id, token, expires, err := h.s.shares.IssueShare(info.Name, ttl)
	if err != nil {
		return nil, connectError(withField("ttl", err))
	}
	return connect.NewResponse(&ldmv1.CreateShareResponse{
		Id: id, Token: token, ExpireTime: timestamppb.New(expires), Volume: info.Name,
	}), nil
}
