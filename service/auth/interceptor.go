package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

// authnInterceptor puts the caller's Identity in the context of every
// handler call, or fails the call with CodeUnauthenticated.
type authnInterceptor struct{ a *Auth }

func (x *authnInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient || x.a.isPublic(req.Spec().Procedure) {
			return next(ctx, req)
		}
		if _, ok := IdentityFrom(ctx); ok {
			return next(ctx, req) // AuthenticateHTTP decided from the headers
		}
		id, err := x.a.authenticate(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		return next(WithIdentity(ctx, id), req)
	}
}

func (x *authnInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (x *authnInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if x.a.isPublic(conn.Spec().Procedure) {
			return next(ctx, conn)
		}
		if _, ok := IdentityFrom(ctx); ok {
			return next(ctx, conn) // AuthenticateHTTP decided from the headers
		}
		id, err := x.a.authenticate(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(WithIdentity(ctx, id), conn)
	}
}

// authzInterceptor checks every call against the policy.
type authzInterceptor struct{ a *Auth }

// caller is the identity of one call with its precomputed policy subjects.
type caller struct {
	id       Identity
	subjects []string
	key      string
}

func callerFrom(ctx context.Context) caller {
	id, ok := IdentityFrom(ctx)
	if !ok {
		id = Identity{Subject: Anonymous, Method: MethodAnonymous}
	}
	s := id.subjects()
	return caller{id: id, subjects: s, key: strings.Join(s, "\x1f")}
}

// check returns nil if c may do act on obj, and otherwise the error to
// return to the client (logged at info). It also returns the policy
// generation that decided.
func (x *authzInterceptor) check(c caller, procedure, obj, act string) (uint64, error) {
	d, err := x.a.authz.allowCaller(c, obj, act)
	if err != nil {
		x.a.log.Error("authorization failed", logSubject, c.id.Subject, logProcedure, procedure, logObject, obj, logAction, act, "error", err)
		return d.Generation, connect.NewError(connect.CodeInternal, errors.New("authorization failed"))
	}
	if d.Allowed {
		return d.Generation, nil
	}
	x.a.log.Info("permission denied", logSubject, c.id.Subject, logMethod, c.id.Method, logProcedure, procedure, logObject, obj, logAction, act)
	return d.Generation, denial(c.id, obj, act)
}

// denial is the error for a denied call: Unauthenticated for the anonymous
// subject (credentials might help), PermissionDenied otherwise.
func denial(id Identity, obj, act string) error {
	if id.Anonymous() {
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("credentials required to %s %s", act, obj))
	}
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s may not %s %s", id.Subject, act, obj))
}

func (x *authzInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		proc := req.Spec().Procedure
		if req.Spec().IsClient || x.a.isPublic(proc) {
			return next(ctx, req)
		}
		c := callerFrom(ctx)
		r, ok := rules[proc]
		if !ok {
			x.a.log.Info("permission denied: procedure has no authorization rule", logSubject, c.id.Subject, logProcedure, proc)
			return nil, denial(c.id, proc, "call")
		}
		if r.list {
			return x.listVolumes(ctx, c, proc, req, next)
		}
		obj := r.obj
		if r.object != nil {
			obj = r.object(req.Any())
		}
		if _, err := x.check(c, proc, obj, r.action); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

// listVolumes lets ListVolumes through and removes from its answer every
// volume the caller may not read. An anonymous caller who may read none of
// the volumes that exist gets Unauthenticated rather than an empty list, so
// a client learns that it needs credentials (this tells it that volumes
// exist, nothing more).
func (x *authzInterceptor) listVolumes(ctx context.Context, c caller, proc string, req connect.AnyRequest, next connect.UnaryFunc) (connect.AnyResponse, error) {
	resp, err := next(ctx, req)
	if err != nil {
		return resp, err
	}
	lr, ok := resp.Any().(*ldmv1.ListVolumesResponse)
	if !ok {
		return nil, connect.NewError(connect.CodeInternal, errors.New("authorization: unexpected ListVolumes response type"))
	}
	kept := lr.Volumes[:0]
	for _, v := range lr.GetVolumes() {
		d, err := x.a.authz.allowCaller(c, VolumeObject(v.GetName()), ActionRead)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, errors.New("authorization failed"))
		}
		if d.Allowed {
			kept = append(kept, v)
		}
	}
	if len(kept) == 0 && len(lr.Volumes) > 0 && c.id.Anonymous() {
		// There are volumes, but none for a caller without credentials:
		// credentials are what is missing.
		x.a.log.Info("permission denied", logSubject, c.id.Subject, logMethod, c.id.Method, logProcedure, proc, logObject, "volumes/*", logAction, ActionRead)
		return nil, denial(c.id, "volumes", ActionRead)
	}
	clear(lr.Volumes[len(kept):])
	lr.Volumes = kept
	return resp, nil
}

func (x *authzInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (x *authzInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		proc := conn.Spec().Procedure
		if x.a.isPublic(proc) {
			return next(ctx, conn)
		}
		c := callerFrom(ctx)
		r, ok := rules[proc]
		if !ok || r.list {
			x.a.log.Info("permission denied: procedure has no streaming authorization rule", logSubject, c.id.Subject, logProcedure, proc)
			return denial(c.id, proc, "call")
		}
		sc := &authzConn{StreamingHandlerConn: conn, x: x, c: c, proc: proc, rule: r}
		if r.object == nil {
			// A fixed object: authorize before the handler runs at all.
			if err := sc.grant(r.obj); err != nil {
				return err
			}
		}
		err := next(ctx, sc)
		if d := sc.denied(); d != nil {
			// Whatever the handler made of the failed Receive or Send, the
			// client learns that it was denied.
			return d
		}
		return err
	}
}

// allowCaller decides for one call's caller: a share identity by its one
// volume, any other by the policy.
func (a *Authorizer) allowCaller(c caller, obj, act string) (Decision, error) {
	if allowed, ok := shareDecision(c.id, obj, act); ok {
		return Decision{Allowed: allowed, Generation: a.Generation()}, nil
	}
	return a.allow(c.subjects, c.key, obj, act)
}

// authzConn authorizes every message a stream receives before the handler
// sees it, and re-checks what it granted when the policy changes (at the
// next Receive or Send), so a revoked permission ends an open stream.
type authzConn struct {
	connect.StreamingHandlerConn
	x    *authzInterceptor
	c    caller
	proc string
	rule rule

	mu      sync.Mutex
	granted []string // objects allowed so far, in order
	gen     uint64   // policy generation that allowed them
	last    string   // the volume of the previous message
	err     error    // the first denial
}

func (s *authzConn) denied() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// grant checks obj (and, after a policy change, everything granted before)
// and records it. It returns the denial error, which sticks.
func (s *authzConn) grant(obj string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if err := s.recheckLocked(); err != nil {
		return err
	}
	for _, g := range s.granted {
		if g == obj {
			return nil
		}
	}
	gen, err := s.x.check(s.c, s.proc, obj, s.rule.action)
	if err != nil {
		s.err = err
		return err
	}
	if len(s.granted) == 0 {
		s.gen = gen
	}
	s.granted = append(s.granted, obj)
	return nil
}

// recheckLocked re-authorizes every granted object if the policy changed
// since they were granted.
func (s *authzConn) recheckLocked() error {
	if len(s.granted) == 0 {
		return nil
	}
	cur := s.x.a.authz.Generation()
	if cur == s.gen {
		return nil
	}
	for _, g := range s.granted {
		gen, err := s.x.check(s.c, s.proc, g, s.rule.action)
		if err != nil {
			s.err = err
			return err
		}
		cur = gen
	}
	s.gen = cur
	return nil
}

// Receive reads the next message and authorizes the volume it names before
// returning it to the handler.
func (s *authzConn) Receive(msg any) error {
	if err := s.denied(); err != nil {
		return err
	}
	if err := s.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	if s.rule.object == nil {
		s.mu.Lock()
		err := s.recheckLocked()
		s.mu.Unlock()
		return err
	}
	name, _ := volumeName(msg)
	if s.rule.sameVolume {
		s.mu.Lock()
		if name == "" {
			name = s.last
		}
		s.last = name
		s.mu.Unlock()
	}
	return s.grant(VolumeObject(name))
}

// Send re-checks the granted objects if the policy changed, then sends.
// A denied message does not stop Send: the handler still acknowledges
// what it did with the messages that were allowed before it (a stored tile
// that is not acknowledged would be written again by a retry).
func (s *authzConn) Send(msg any) error {
	s.mu.Lock()
	err := s.recheckLocked()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.StreamingHandlerConn.Send(msg)
}
