package client_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// An Importer imports a raw volume through generated clients built with
// the protocol, TLS and interceptors of the caller's choice; the Progress
// callback sees every acknowledged brick.
func ExampleImporter_Import() {
	svc, err := service.New(service.Config{Store: storage.NewMemory(0), Logger: quietLogger()})
	if err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := service.NewHTTPServer(svc.Handler(), nil, quietLogger())
	go srv.Serve(l)
	defer srv.Close()

	hc := &http.Client{Transport: client.NewTransport(nil)}
	base := "http://" + l.Addr().String()
	im := client.Importer{
		Tiles:   ldmv1connect.NewTileServiceClient(hc, base, connect.WithGRPC()),
		Volumes: ldmv1connect.NewVolumeServiceClient(hc, base, connect.WithGRPC()),
	}
	vol := &ldmv1.Volume{
		Name:       "cube",
		Shape:      &ldmv1.Shape{X: 16, Y: 16, Z: 16},
		DataType:   ldmv1.DataType_DATA_TYPE_UINT8,
		BrickShape: &ldmv1.Shape{X: 8, Y: 8, Z: 8},
		LodCount:   2,
	}
	var last client.Progress
	st, err := im.Import(context.Background(), bytes.NewReader(make([]byte, 16*16*16)), vol, client.ImportOptions{
		Progress: func(p client.Progress) { last = p },
	})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s: %d bricks, %d levels, %d bytes\n", st.Volume.GetName(), st.Bricks, st.Levels, st.Bytes)
	fmt.Printf("progress: %d of %d bricks, %d of %d bytes\n", last.BricksDone, last.Bricks, last.BytesDone, last.Bytes)
	// Output:
	// cube: 9 bricks, 2 levels, 4608 bytes
	// progress: 9 of 9 bricks, 4608 of 4608 bytes
}
