package service

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	"github.com/xcheng85/go-ldm/storage"
)

// ErrorDomain is the domain of the google.rpc.ErrorInfo details this
// package attaches to errors.
const ErrorDomain = "ldm.v1"

// Reasons carried in google.rpc.ErrorInfo details.
const (
	// ReasonNotLeader: the node cannot accept the call; the metadata keys
	// "leader_id" and "leader_addr" name the leader when it is known.
	ReasonNotLeader = "NOT_LEADER"
	// ReasonNotClustered: a membership call reached a single node.
	ReasonNotClustered = "NOT_CLUSTERED"
)

// LeaderHeader is the response header that carries the leader's address
// (host:port) on a NOT_LEADER error, for clients that do not decode details.
const LeaderHeader = "Ldm-Leader"

// fieldError ties an error to the request field that caused it, so the
// mapping can name the field in a google.rpc.BadRequest detail.
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return e.field + ": " + e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

// invalidField returns an error wrapping storage.ErrInvalidArgument that
// names field.
func invalidField(field, format string, args ...any) error {
	return &fieldError{field: field, err: fmt.Errorf("%w: "+format, append([]any{storage.ErrInvalidArgument}, args...)...)}
}

// withField names the request field that err is about.
func withField(field string, err error) error {
	if err == nil {
		return nil
	}
	return &fieldError{field: field, err: err}
}

// connectError is the one mapping from errors to Connect codes. Handlers
// and interceptors pass every error through it:
//
//	*connect.Error                      unchanged
//	context.Canceled                    Canceled
//	context.DeadlineExceeded            DeadlineExceeded
//	storage.ErrInvalidName/Argument     InvalidArgument + google.rpc.BadRequest
//	storage.ErrNotFound                 NotFound
//	a FailedPrecondition() bool method  FailedPrecondition (a node of the
//	                                    cluster lacks a volume's codec)
//	storage.ErrExists                   AlreadyExists
//	storage.ErrOutOfRange               OutOfRange + google.rpc.BadRequest
//	storage.ErrTooLarge                 ResourceExhausted
//	storage.ErrNoSpace                  ResourceExhausted, a fixed message
//	                                    (the cause names a server path; the
//	                                    store logs it)
//	storage.ErrCorrupt                  DataLoss (InvalidArgument + BadRequest
//	                                    when it names a request field: a
//	                                    CRC mismatch on write)
//	storage.ErrNotLeader                Unavailable + google.rpc.ErrorInfo and
//	                                    the leader's address in the message
//	storage.ErrClosed                   Unavailable
//	anything else                       Internal
//
// It returns nil for a nil error.
func connectError(err error) error {
	if err == nil {
		return nil
	}
	if ce := new(connect.Error); errors.As(err, &ce) {
		return ce
	}
	var fe *fieldError
	hasField := errors.As(err, &fe)
	badRequest := func(code connect.Code) *connect.Error {
		ce := connect.NewError(code, err)
		if hasField {
			addDetail(ce, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{
				Field:       fe.field,
				Description: fe.err.Error(),
			}}})
		}
		return ce
	}
	switch {
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, storage.ErrInvalidName), errors.Is(err, storage.ErrInvalidArgument):
		return badRequest(connect.CodeInvalidArgument)
	case errors.Is(err, storage.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, errGenerationMismatch):
		return badRequest(connect.CodeFailedPrecondition)
	case isFailedPrecondition(err):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, storage.ErrExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, storage.ErrOutOfRange):
		return badRequest(connect.CodeOutOfRange)
	case errors.Is(err, storage.ErrTooLarge):
		return badRequest(connect.CodeResourceExhausted)
	case errors.Is(err, storage.ErrNoSpace):
		return connect.NewError(connect.CodeResourceExhausted, errors.New("the server's disk is full: free space on it (or delete volumes you no longer need), then retry"))
	case errors.Is(err, storage.ErrCorrupt):
		if hasField {
			return badRequest(connect.CodeInvalidArgument)
		}
		return connect.NewError(connect.CodeDataLoss, err)
	case errors.Is(err, storage.ErrNotLeader):
		ce := connect.NewError(connect.CodeUnavailable, err)
		info := &errdetails.ErrorInfo{Reason: ReasonNotLeader, Domain: ErrorDomain, Metadata: map[string]string{}}
		var nl *storage.NotLeaderError
		if errors.As(err, &nl) {
			info.Metadata["leader_id"] = nl.LeaderID
			info.Metadata["leader_addr"] = nl.LeaderAddr
			if nl.LeaderAddr != "" {
				ce.Meta().Set(LeaderHeader, nl.LeaderAddr)
			}
		}
		addDetail(ce, info)
		return ce
	case errors.Is(err, storage.ErrClosed):
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("the server is shutting down, retry on another server or later: %w", err))
	}
	return connect.NewError(connect.CodeInternal, err)
}

// isFailedPrecondition reports whether err says that a valid request
// cannot run in the system's present state: it has a method
// FailedPrecondition() bool that returns true (cluster.CodecUnsupportedError:
// a node of the cluster must be upgraded before a zstd volume is created).
func isFailedPrecondition(err error) bool {
	var fp interface{ FailedPrecondition() bool }
	return errors.As(err, &fp) && fp.FailedPrecondition()
}

// notClustered is the error of membership calls on a single node.
func notClustered(procedure string) error {
	ce := connect.NewError(connect.CodeFailedPrecondition,
		fmt.Errorf("%s: this node is not clustered (start it with cluster flags to use membership calls)", procedure))
	addDetail(ce, &errdetails.ErrorInfo{Reason: ReasonNotClustered, Domain: ErrorDomain})
	return ce
}

func addDetail(ce *connect.Error, m proto.Message) {
	if d, err := connect.NewErrorDetail(m); err == nil {
		ce.AddDetail(d)
	}
}
