package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	ldmserver "github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/server/servertest"
)

// TestExporter_ExportZarr_metadata exports the demo volume with and
// without the server's OME-Zarr view: with it the metadata documents are
// the view's, byte for byte; without it (package omezarr) the multiscales
// and arrays describe the volume the same way.
func TestExporter_ExportZarr_metadata(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t, ldmserver.Config{Demo: true})
	hc := &http.Client{Transport: client.NewTransport(nil)}
	vc := ldmv1connect.NewVolumeServiceClient(hc, s.URL(), connect.WithReadMaxBytes(1<<30))
	ctx := context.Background()
	// An oblique volume in LPS, which OME-NGFF 0.4 cannot place fully.
	if _, err := vc.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
		Name: "oblique", Shape: &ldmv1.Shape{X: 70, Y: 50, Z: 40}, DataType: ldmv1.DataType_DATA_TYPE_INT16, LodCount: 2,
		Transform: []float64{0.6, -0.1, 0, -12.5, 0.1, 0.6, 0, 30.25, 0, 0, -1.25, 7, 0, 0, 0, 1}, Space: ldmv1.Space_SPACE_LPS,
	}})); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{ldmserver.DemoVolume, "oblique"} {
		exportBoth(t, ctx, vc, hc, s.URL(), name)
	}
}

func exportBoth(t *testing.T, ctx context.Context, vc ldmv1connect.VolumeServiceClient, hc *http.Client, base, volume string) {
	t.Helper()
	v, err := vc.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: volume}))
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) []byte {
		resp, err := hc.Get(base + "/zarr/" + volume + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v", name, resp.StatusCode, err)
		}
		return b
	}
	names := []string{".zgroup", ".zattrs"}
	for l := range v.Msg.GetVolume().GetLodCount() {
		names = append(names, fmt.Sprint(l)+"/.zarray")
	}
	withView, without := filepath.Join(t.TempDir(), "v.zarr"), filepath.Join(t.TempDir(), "o.zarr")
	if _, err := (client.Exporter{Volumes: vc, View: &client.ZarrView{BaseURL: base, HTTP: hc}}).ExportZarr(ctx, volume, withView); err != nil {
		t.Fatal(err)
	}
	st, err := (client.Exporter{Volumes: vc}).ExportZarr(ctx, volume, without)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bricks == 0 && volume == ldmserver.DemoVolume {
		t.Fatal("no chunks written")
	}
	for _, name := range names {
		view := get(name)
		a, err := os.ReadFile(filepath.Join(withView, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != string(view) {
			t.Fatalf("%s: the export's differs from the view's:\n%s\n%s", name, a, view)
		}
		b, err := os.ReadFile(filepath.Join(without, name))
		if err != nil {
			t.Fatal(err)
		}
		var x, y map[string]any
		if err := json.Unmarshal(view, &x); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &y); err != nil {
			t.Fatal(err)
		}
		if g, ok := x["go-ldm"].(map[string]any); ok {
			delete(g, "generation") // the view's alone: the export is a copy
		}
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("%s: omezarr's differs from the view's:\n%v\n%v", name, y, x)
		}
	}
}
