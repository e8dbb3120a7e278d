package service

import (
	"errors"
	"fmt"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/storage"
)

// errGenerationMismatch: a read names a generation of a volume that is not
// the volume's current one (it was deleted and created again). The error
// table maps it to FailedPrecondition.
var errGenerationMismatch = errors.New("volume generation does not match")

// checkGeneration fails when want names another generation of the volume
// than info's; 0 matches any.
func checkGeneration(info storage.VolumeInfo, want uint64) error {
	if got := apiconv.Generation(info); want != 0 && want != got {
		return &fieldError{field: "generation", err: fmt.Errorf("%w: volume %q is generation %d, the request names %d: it was deleted and created again; get the volume (GetVolume) for its current generation",
			errGenerationMismatch, info.Name, got, want)}
	}
	return nil
}
