package cluster

import (
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// sealedTailFiler works around hashicorp/raft-wal#31 in v0.4.0: when Raft
// truncates the log's tail (a follower drops entries the new leader does
// not have), raft-wal marks the tail segment sealed without writing its
// index block, and reading that segment after a restart fails with "sealed
// segment has no index block" (Raft panics). Such a segment is opened by
// scanning its frames instead, like an unsealed tail after a crash; entries
// past its MaxIndex are never looked up there, because the next segment
// starts at MaxIndex+1.
type sealedTailFiler struct{ *segment.Filer }

func newSealedTailFiler(dir string) sealedTailFiler {
	return sealedTailFiler{segment.NewFiler(dir, fs.New())}
}

// Open implements types.SegmentFiler.
func (f sealedTailFiler) Open(info types.SegmentInfo) (types.SegmentReader, error) {
	if !info.SealTime.IsZero() && info.IndexStart == 0 {
		return f.Filer.RecoverTail(info)
	}
	return f.Filer.Open(info)
}
