package client_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/pyramid"
)

// TestCreateVolume_zstd_refused_until_every_node_supports_it: on a cluster
// with a server that does not announce the zstd codec in gossip (here one
// gossip does not know, as a node of an older version), creating a zstd
// volume, directly or by an import, fails with FailedPrecondition naming
// the node and saying to upgrade; a raw volume is created.
func TestCreateVolume_zstd_refused_until_every_node_supports_it(t *testing.T) {
	s, _ := startServer(t, "n1", true, nil)
	waitFor(t, 10*time.Second, "n1 to lead", s.node.IsLeader)
	if err := s.node.Raft().AddNonvoter("old", "127.0.0.1:1", 0, 10*time.Second).Error(); err != nil {
		t.Fatalf("add the server that does not announce zstd: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := "http://" + s.addr
	check := func(what string, err error) {
		t.Helper()
		if connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("%s: %v (code %v); want FailedPrecondition", what, err, connect.CodeOf(err))
		}
		for _, want := range []string{"old", "upgrade every node", "zstd"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s: %q does not say %q", what, err, want)
			}
		}
	}
	vol := func(name string, codec ldmv1.Codec) *ldmv1.Volume {
		return &ldmv1.Volume{Name: name, Shape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, DataType: ldmv1.DataType_DATA_TYPE_UINT8, Codec: codec}
	}
	hc := &http.Client{Transport: client.NewTransport(nil)}
	for _, opt := range []connect.ClientOption{connect.WithGRPC(), connect.WithProtoJSON()} {
		volumes := ldmv1connect.NewVolumeServiceClient(hc, base, opt)
		_, err := volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: vol("z", ldmv1.Codec_CODEC_ZSTD)}))
		check("CreateVolume zstd", err)
	}
	c, err := client.New(ctx, client.Config{Seeds: []string{base}, RefreshInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = pyramid.PhantomSize
	_, err = c.ImportReader(ctx, io.NewSectionReader(pyramid.Phantom(), 0, n*n*n), apiconv.MetaToAPI(pyramid.PhantomMeta("zimport")),
		client.ImportOptions{Codec: ldmv1.Codec_CODEC_ZSTD})
	check("import with codec zstd", err)
	if _, err := c.CreateVolume(ctx, &ldmv1.CreateVolumeRequest{Volume: vol("r", ldmv1.Codec_CODEC_RAW)}); err != nil {
		t.Fatalf("create a raw volume: %v", err)
	}
}
