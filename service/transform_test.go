package service_test

import (
	"context"
	"math"
	"testing"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// TestService_VolumeTransform creates volumes with transforms over every
// protocol: GetVolume and ListVolumes return the affine exactly and its
// space, a volume created without one reads as diag(spacing), and a
// degenerate transform, a spacing that disagrees with it or an unknown
// space fails with InvalidArgument naming the field.
func TestService_VolumeTransform(t *testing.T) {
	t.Parallel()
	oblique := []float64{
		0.9 * math.Cos(0.4), -1.1 * math.Sin(0.4), 0, -97.123456789012,
		0.9 * math.Sin(0.4), 1.1 * math.Cos(0.4), 0, 13.000000000001,
		0, 0, -2.5, 1e-9,
		0, 0, 0, 1,
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, serverOptions{store: storage.NewMemory(0)})
			c := ts.clients(t, p)
			ctx := context.Background()
			shape := &ldmv1.Shape{X: 4, Y: 4, Z: 4}
			create := func(v *ldmv1.Volume) error {
				v.Shape, v.DataType = shape, ldmv1.DataType_DATA_TYPE_UINT8
				_, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: v}))
				return err
			}
			if err := create(&ldmv1.Volume{Name: "lps", Transform: oblique, Space: ldmv1.Space_SPACE_LPS}); err != nil {
				t.Fatal(err)
			}
			if err := create(&ldmv1.Volume{Name: "plain", Spacing: []float64{0.5, 2, 3}}); err != nil {
				t.Fatal(err)
			}
			res, err := c.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "lps"}))
			if err != nil {
				t.Fatal(err)
			}
			v := res.Msg.GetVolume()
			if v.GetSpace() != ldmv1.Space_SPACE_LPS || len(v.GetTransform()) != 16 {
				t.Fatalf("space %v transform %v", v.GetSpace(), v.GetTransform())
			}
			for i, w := range oblique {
				if v.GetTransform()[i] != w {
					t.Fatalf("transform[%d] = %v, want %v exactly", i, v.GetTransform()[i], w)
				}
			}
			if s := v.GetSpacing(); len(s) != 3 || math.Abs(s[0]-0.9) > 1e-12 || math.Abs(s[1]-1.1) > 1e-12 || s[2] != 2.5 {
				t.Fatalf("spacing %v, want the column lengths 0.9, 1.1, 2.5", s)
			}
			list, err := c.volumes.ListVolumes(ctx, connect.NewRequest(&ldmv1.ListVolumesRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range list.Msg.GetVolumes() {
				want := []float64{0.5, 0, 0, 0, 0, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 1}
				if v.GetName() == "lps" {
					want = oblique
				}
				for i := range want {
					if v.GetTransform()[i] != want[i] {
						t.Fatalf("%s: transform %v, want %v", v.GetName(), v.GetTransform(), want)
					}
				}
			}

			id := func(i int, x float64) []float64 {
				a := []float64{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}
				a[i] = x
				return a
			}
			for _, tc := range []struct {
				name  string
				v     *ldmv1.Volume
				field string
			}{
				{"short", &ldmv1.Volume{Transform: []float64{1, 0, 0, 0}}, "volume.transform"},
				{"nan", &ldmv1.Volume{Transform: id(7, math.NaN())}, "volume.transform"},
				{"zero_axis", &ldmv1.Volume{Transform: id(10, 0)}, "volume.transform"},
				{"last_row", &ldmv1.Volume{Transform: id(12, 1)}, "volume.transform"},
				{"spacing_disagrees", &ldmv1.Volume{Transform: id(5, 2), Spacing: []float64{1, 1, 1}}, "volume.spacing"},
				{"unknown_space", &ldmv1.Volume{Space: ldmv1.Space(9)}, "volume.space"},
			} {
				tc.v.Name = "bad"
				wantField(t, tc.name, create(tc.v), tc.field)
			}
			if _, err := c.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "bad"})); connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("a refused volume exists: %v", err)
			}
		})
	}
}
