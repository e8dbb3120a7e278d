package service_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// printInterceptor prints when a call passes through it, unary or
// streaming, standing in for authentication.
type printInterceptor struct{ name string }

func (p printInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		fmt.Println(p.name, "unary", req.Spec().Procedure)
		return next(ctx, req)
	}
}

func (p printInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (p printInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		fmt.Println(p.name, "stream", conn.Spec().Procedure)
		return next(ctx, conn)
	}
}

// Example_interceptorOrder pins the order of the interceptors: the access
// log is outermost (it records every call with its final code), then panic
// recovery, then Config.Interceptors in order (here "authn" and "authz"),
// then request validation, then the handler. An invalid request therefore
// passes authn and authz before validation rejects it, and streaming calls
// pass the same chain.
func Example_interceptorOrder() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.TimeKey, "duration", "peer", "error", "component":
				return slog.Attr{}
			}
			return a
		},
	}))
	svc, err := service.New(service.Config{
		Store:        storage.NewMemory(0),
		Logger:       logger,
		Interceptors: []connect.Interceptor{printInterceptor{"authn"}, printInterceptor{"authz"}},
	})
	if err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := service.NewHTTPServer(svc.Handler(), nil, logger)
	go srv.Serve(l)
	defer srv.Close()

	hc := &http.Client{Transport: service.NewTransport(nil)}
	volumes := ldmv1connect.NewVolumeServiceClient(hc, "http://"+l.Addr().String(), connect.WithGRPC())
	tiles := ldmv1connect.NewTileServiceClient(hc, "http://"+l.Addr().String(), connect.WithGRPC())
	ctx := context.Background()

	_, err = volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "Not A Name"}))
	fmt.Println("client:", connect.CodeOf(err))

	stream, err := tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "missing"}))
	if err == nil {
		for stream.Receive() {
		}
		err = stream.Err()
		stream.Close()
	}
	fmt.Println("client:", connect.CodeOf(err))

	// Output:
	// authn unary /ldm.v1.VolumeService/GetVolume
	// authz unary /ldm.v1.VolumeService/GetVolume
	// level=INFO msg=rpc procedure=/ldm.v1.VolumeService/GetVolume protocol=grpc code=invalid_argument
	// client: invalid_argument
	// authn stream /ldm.v1.TileService/ReadTileStream
	// authz stream /ldm.v1.TileService/ReadTileStream
	// level=INFO msg=rpc procedure=/ldm.v1.TileService/ReadTileStream protocol=grpc code=not_found sent=0 received=1
	// client: not_found
}
