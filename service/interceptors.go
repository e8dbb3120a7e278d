package service

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
)

// Attribute keys of the access log.
const (
	logKeyProcedure = "procedure"
	logKeyProtocol  = "protocol"
	logKeyPeer      = "peer"
	logKeyCode      = "code"
	logKeyDuration  = "duration"
	logKeyError     = "error"
	logKeySent      = "sent"
	logKeyReceived  = "received"
	logKeyPanic     = "panic"
)

// recoverInterceptor turns a panic in a handler (or an inner interceptor)
// into an Internal error and logs it with its stack, so one bad call does
// not take the process down. Only the access log wraps it.
type recoverInterceptor struct{ log *slog.Logger }

func (i recoverInterceptor) recovered(ctx context.Context, procedure string, r any, err *error) {
	i.log.ErrorContext(ctx, "handler panic", logKeyProcedure, procedure, logKeyPanic, fmt.Sprint(r), "stack", string(debug.Stack()))
	*err = connect.NewError(connect.CodeInternal, fmt.Errorf("internal error in %s (the server log has details)", procedure))
}

func (i recoverInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (res connect.AnyResponse, err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == errAbortHandler {
					panic(r)
				}
				res = nil
				i.recovered(ctx, req.Spec().Procedure, r, &err)
			}
		}()
		return next(ctx, req)
	}
}

func (i recoverInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i recoverInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == errAbortHandler {
					panic(r)
				}
				i.recovered(ctx, conn.Spec().Procedure, r, &err)
			}
		}()
		return next(ctx, conn)
	}
}

// errAbortHandler is net/http's sentinel panic, which must propagate (and
// is compared with ==, as net/http does).
var errAbortHandler any = http.ErrAbortHandler

// logInterceptor writes one access log record per call, unary or
// streaming: procedure, protocol, peer, code, duration and, for streams,
// the number of messages each way. Successful calls and client errors log
// at Info, server errors (internal, data loss, unknown) at Error. It is the
// outermost interceptor.
type logInterceptor struct{ log *slog.Logger }

func (i logInterceptor) record(ctx context.Context, procedure, protocol, peer string, start time.Time, err error, extra ...any) {
	code := "ok"
	level := slog.LevelInfo
	if err != nil {
		c := connect.CodeOf(err)
		code = c.String()
		switch c {
		case connect.CodeInternal, connect.CodeDataLoss, connect.CodeUnknown:
			level = slog.LevelError
		}
	}
	if !i.log.Enabled(ctx, level) {
		return
	}
	attrs := []any{
		logKeyProcedure, procedure,
		logKeyProtocol, protocol,
		logKeyPeer, peer,
		logKeyCode, code,
		logKeyDuration, time.Since(start),
	}
	attrs = append(attrs, extra...)
	if err != nil {
		attrs = append(attrs, logKeyError, err.Error())
	}
	i.log.Log(ctx, level, "rpc", attrs...)
}

func (i logInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		if isNotModified(err) {
			i.record(ctx, req.Spec().Procedure, req.Peer().Protocol, req.Peer().Addr, start, nil, "status", 304)
		} else {
			i.record(ctx, req.Spec().Procedure, req.Peer().Protocol, req.Peer().Addr, start, err)
		}
		return res, err
	}
}

func (i logInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i logInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		counted := &countingConn{StreamingHandlerConn: conn}
		err := next(ctx, counted)
		i.record(ctx, conn.Spec().Procedure, conn.Peer().Protocol, conn.Peer().Addr, start, err,
			logKeySent, counted.sent.Load(), logKeyReceived, counted.received.Load())
		return err
	}
}

// countingConn counts the messages of a stream for the access log.
type countingConn struct {
	connect.StreamingHandlerConn
	sent, received atomic.Int64 // Receive may run on another goroutine
}

func (c *countingConn) Send(m any) error {
	err := c.StreamingHandlerConn.Send(m)
	if err == nil {
		c.sent.Add(1)
	}
	return err
}

func (c *countingConn) Receive(m any) error {
	err := c.StreamingHandlerConn.Receive(m)
	if err == nil {
		c.received.Add(1)
	}
	return err
}

// isNotModified reports whether err is connect's 304 Not Modified answer
// to a conditional GET.
func isNotModified(err error) bool {
	return err != nil && connect.IsNotModifiedError(err)
}

// validateInterceptor checks each request message (every message of a
// stream, too) before the handler sees it: volume names, required fields,
// ranges, the tile size, and brick keys against the volume's levels and
// brick grid (lookup finds the volume; nil skips that check). A bad
// message fails with InvalidArgument (with a google.rpc.BadRequest naming
// the field) or ResourceExhausted. It is the innermost interceptor.
type validateInterceptor struct {
	maxTile int
	lookup  volumeLookup
}

func (i validateInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := validateRequest(req.Any(), i.maxTile, true); err != nil {
			return nil, connectError(err)
		}
		if i.lookup != nil {
			if err := (&keyChecker{lookup: i.lookup}).check(req.Any()); err != nil {
				return nil, connectError(err)
			}
		}
		return next(ctx, req)
	}
}

func (i validateInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i validateInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, &validatingConn{StreamingHandlerConn: conn, maxTile: i.maxTile, keys: keyChecker{lookup: i.lookup}})
	}
}

// validatingConn validates every message received on a stream.
type validatingConn struct {
	connect.StreamingHandlerConn
	maxTile  int
	received atomic.Int64
	keys     keyChecker // used by Receive only, which one goroutine calls
}

func (c *validatingConn) Receive(m any) error {
	if err := c.StreamingHandlerConn.Receive(m); err != nil {
		return err
	}
	if err := validateRequest(m, c.maxTile, c.received.Add(1) == 1); err != nil {
		return connectError(err)
	}
	if c.keys.lookup != nil {
		if err := c.keys.check(m); err != nil {
			return connectError(err)
		}
	}
	return nil
}
