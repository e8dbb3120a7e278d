package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/pflag"

	"github.com/xcheng85/go-ldm/client"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
)

// clientFlags are the flags every client subcommand shares: the server,
// the protocol, and TLS files and credentials.
type clientFlags struct {
	server   string
	protocol string
	security clientSecurityFlags
}

// clientSetup is what a client command connects with.
type clientSetup struct {
	// BaseURL is the server URL from --server (http:// or https://).
	BaseURL string
	// TLSConfig is used for https:// URLs; nil means the system roots.
	TLSConfig *tls.Config
	// Options are the connect client options: the protocol, message
	// limits and credentials.
	Options []connect.ClientOption
	// Authorization is the credentials' Authorization header, for plain
	// HTTP requests ("" for none).
	Authorization string
}

// register adds the client flags to fs (the persistent flags of a command
// group, so every subcommand has them).
func (f *clientFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.server, "server", "http://127.0.0.1:8080", "URL of the ldm server (http:// or https://)")
	fs.StringVar(&f.protocol, "protocol", "connect", "RPC protocol: connect, grpc or grpcweb")
	f.security.register(fs)
}

// clients are the ldm.v1 clients of one server.
type clients struct {
	baseURL string
	tiles   ldmv1connect.TileServiceClient
	volumes ldmv1connect.VolumeServiceClient
	cluster ldmv1connect.ClusterServiceClient
	http    *http.Client
	// authz is the Authorization header of plain HTTP requests.
	authz string
}

// close releases idle connections.
func (c *clients) close() { c.http.CloseIdleConnections() }

// connect builds the clients from the flags.
func (f *clientFlags) connect(ctx context.Context) (*clients, error) {
	u, err := url.Parse(f.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError{fmt.Errorf("--server %q: want a URL such as http://127.0.0.1:8080", f.server)}
	}
	setup := &clientSetup{BaseURL: strings.TrimSuffix(f.server, "/")}
	switch f.protocol {
	case "connect":
	case "grpc":
		setup.Options = append(setup.Options, connect.WithGRPC())
	case "grpcweb":
		setup.Options = append(setup.Options, connect.WithGRPCWeb())
	default:
		return nil, usageError{fmt.Errorf("--protocol %q: want connect, grpc or grpcweb", f.protocol)}
	}
	setup.Options = append(setup.Options, connect.WithReadMaxBytes(1<<31-1), connect.WithSendMaxBytes(1<<31-1))
	if err := f.security.configure(setup); err != nil {
		return nil, fmt.Errorf("security: %w", err)
	}
	hc := &http.Client{Transport: client.NewTransport(setup.TLSConfig)}
	return &clients{
		baseURL: setup.BaseURL,
		tiles:   ldmv1connect.NewTileServiceClient(hc, setup.BaseURL, setup.Options...),
		volumes: ldmv1connect.NewVolumeServiceClient(hc, setup.BaseURL, setup.Options...),
		cluster: ldmv1connect.NewClusterServiceClient(hc, setup.BaseURL, setup.Options...),
		http:    hc,
		authz:   setup.Authorization,
	}, nil
}

// unreachableError says the server could not be reached; it exits with
// code 3.
type unreachableError struct {
	server string
	err    error
}

func (e unreachableError) Error() string {
	return fmt.Sprintf("cannot reach the server at %s: %v\n(is `ldm serve` running there? point at another with --server or LDM_SERVER)", e.server, e.err)
}
func (e unreachableError) Unwrap() error { return e.err }

// rpcError explains an RPC error to a user: unreachable servers get their
// own message and exit code; other errors keep their code in the text.
func (c *clients) rpcError(what string, err error) error {
	if err == nil {
		return nil
	}
	var opErr *net.OpError
	if connect.CodeOf(err) == connect.CodeUnavailable && errors.As(err, &opErr) {
		return unreachableError{server: c.baseURL, err: opErr}
	}
	if hint := codeHints[connect.CodeOf(err)]; hint != "" {
		return fmt.Errorf("%s: %w\n(%s)", what, err, hint)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// codeHints say what to do next after an RPC error of a given code.
var codeHints = map[connect.Code]string{
	connect.CodeNotFound:          "'ldm volume list' shows the volumes on this server",
	connect.CodeAlreadyExists:     "choose another name, or delete the volume first with 'ldm volume delete NAME'",
	connect.CodeOutOfRange:        "'ldm volume get NAME' shows the volume's next offset; valid offsets are below it",
	connect.CodeResourceExhausted: "the message is above the server's size limit: send smaller tiles, or raise --max-tile-bytes of ldm serve",
	connect.CodeUnauthenticated:   "the server requires credentials: give --token (or LDM_TOKEN), or --cert and --key for mutual TLS",
	connect.CodePermissionDenied:  "the credentials are not allowed this call: ask the server's operator for access",
	connect.CodeDataLoss:          "the server found corrupt data: its log names the file; restore it from a replica or backup",
}

// with connects with f's flags, calls fn with the clients and closes them
// when fn returns.
func (f *clientFlags) with(ctx context.Context, fn func(c *clients) error) error {
	c, err := f.connect(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	return fn(c)
}
