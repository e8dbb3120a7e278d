package storage

import (
	"bytes"
	"testing"
)

// SnapshotBytes returns a snapshot of s as a stream, for the tests of this
// package and of storage_test.
func SnapshotBytes(tb testing.TB, s *Store) []byte {
	tb.Helper()
	sn, err := s.Snapshot()
	if err != nil {
		tb.Fatal(err)
	}
	defer sn.Release()
	var buf bytes.Buffer
	if _, err := sn.WriteTo(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}
