package auth

import (
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
)

// rule says what a procedure needs: an action and a function that finds the
// object in a request message. A nil object function means the object is
// fixed (obj).
type rule struct {
	action string
	obj    string
	object func(msg any) string
	// list marks ListVolumes: the call itself is allowed and the response is
	// filtered to the volumes the caller may read.
	list bool
	// sameVolume marks WriteTileStream, where an empty volume in a later
	// message means the volume of the message before.
	sameVolume bool
}

// rules maps every procedure of ldm.v1 to what it needs. A procedure that
// is not here and not public is denied.
var rules = map[string]rule{
	ldmv1connect.TileServiceReadTileProcedure:       {action: ActionRead, object: volumeOf},
	ldmv1connect.TileServiceReadTileStreamProcedure: {action: ActionRead, object: volumeOf},
	ldmv1connect.TileServiceWriteTileProcedure:      {action: ActionWrite, object: volumeOf},
	ldmv1connect.TileServiceWriteTileStreamProcedure: {
		action: ActionWrite, object: volumeOf, sameVolume: true,
	},
	ldmv1connect.VolumeServiceGetVolumeProcedure:       {action: ActionRead, object: volumeOf},
	ldmv1connect.VolumeServiceGetBrickProcedure:        {action: ActionRead, object: volumeOf},
	ldmv1connect.VolumeServiceStreamBricksProcedure:    {action: ActionRead, object: volumeOf},
	ldmv1connect.VolumeServiceReadRegionProcedure:      {action: ActionRead, object: volumeOf},
	ldmv1connect.VolumeServiceListBricksProcedure:      {action: ActionRead, object: volumeOf},
	ldmv1connect.VolumeServiceCreateShareProcedure:     {action: ActionAdmin, object: volumeOf},
	ldmv1connect.VolumeServiceCreateVolumeProcedure:    {action: ActionAdmin, object: volumeOf},
	ldmv1connect.VolumeServiceDeleteVolumeProcedure:    {action: ActionAdmin, object: volumeOf},
	ldmv1connect.VolumeServiceListVolumesProcedure:     {action: ActionRead, list: true},
	ldmv1connect.ClusterServiceGetServersProcedure:     {action: ActionRead, obj: ObjectCluster},
	ldmv1connect.ClusterServiceRemoveServerProcedure:   {action: ActionAdmin, obj: ObjectCluster},
	ldmv1connect.ClusterServiceTransferLeaderProcedure: {action: ActionAdmin, obj: ObjectCluster},
	ldmv1connect.ClusterServiceLeaveProcedure:          {action: ActionAdmin, obj: ObjectCluster},

	// Health and reflection describe the server, like GetServers. They are
	// public by default (DefaultPublic); these rules apply when they are not.
	"/grpc.health.v1.Health/Check":                                   {action: ActionRead, obj: ObjectCluster},
	"/grpc.health.v1.Health/Watch":                                   {action: ActionRead, obj: ObjectCluster},
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      {action: ActionRead, obj: ObjectCluster},
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": {action: ActionRead, obj: ObjectCluster},
}

// volumeName returns the volume a request message names, and whether the
// message is of a type that names one.
func volumeName(msg any) (string, bool) {
	switch m := msg.(type) {
	case *ldmv1.ReadTileRequest:
		return m.GetVolume(), true
	case *ldmv1.ReadTileStreamRequest:
		return m.GetVolume(), true
	case *ldmv1.WriteTileRequest:
		return m.GetVolume(), true
	case *ldmv1.WriteTileStreamRequest:
		return m.GetVolume(), true
	case *ldmv1.GetVolumeRequest:
		return m.GetName(), true
	case *ldmv1.GetBrickRequest:
		return m.GetVolume(), true
	case *ldmv1.StreamBricksRequest:
		return m.GetVolume(), true
	case *ldmv1.ReadRegionRequest:
		return m.GetVolume(), true
	case *ldmv1.ListBricksRequest:
		return m.GetVolume(), true
	case *ldmv1.CreateShareRequest:
		return m.GetVolume(), true
	case *ldmv1.CreateVolumeRequest:
		return m.GetVolume().GetName(), true
	case *ldmv1.DeleteVolumeRequest:
		return m.GetName(), true
	}
	return "", false
}

// volumeOf returns the policy object of a request message's volume.
func volumeOf(msg any) string {
	name, _ := volumeName(msg)
	return VolumeObject(name)
}
