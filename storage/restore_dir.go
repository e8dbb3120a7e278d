package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A restore is staged in a temporary directory holding the new volume
// directories, an applied marker (appliedName) and MANIFEST (the volume
// names, one per line). Renaming the staging directory to .restore-ready
// is the commit point; finishRestore then swaps it in, and redoes that
// after a crash (it is idempotent):
//
//  1. Every volume directory in the store is moved to the trash, except
//     one named in MANIFEST whose staged copy is already gone (it was
//     moved into place by an earlier, interrupted run).
//  2. Every staged volume directory still in .restore-ready is renamed
//     into the store.
//  3. The applied marker is replaced by the staged one.
//  4. .restore-ready and the trash are removed.
func (s *Store) finishRestore() error {
	ready := filepath.Join(s.dir, restoreReadyName)
	if _, err := os.Stat(ready); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	mb, err := os.ReadFile(filepath.Join(ready, restoreManifest))
	if err != nil {
		return fmt.Errorf("storage: restore manifest: %w", err)
	}
	names := map[string]bool{}
	for _, n := range strings.Split(strings.TrimSpace(string(mb)), "\n") {
		if n == "" {
			continue
		}
		if err := ValidateName(n); err != nil {
			return fmt.Errorf("storage: restore manifest: %v: %w", err, ErrCorrupt)
		}
		names[n] = true
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	var trash []string
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() || ValidateName(n) != nil {
			continue
		}
		if names[n] {
			if _, err := os.Stat(filepath.Join(ready, n)); errors.Is(err, os.ErrNotExist) {
				continue // already swapped in
			}
		}
		t := filepath.Join(s.dir, fmt.Sprintf("%s%s-%d", trashPrefix, n, s.seq.Add(1)))
		if err := s.fs.Rename(filepath.Join(s.dir, n), t); err != nil {
			return fmt.Errorf("storage: restore: %w", err)
		}
		trash = append(trash, t)
	}
	for n := range names {
		src := filepath.Join(ready, n)
		if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := s.fs.Rename(src, filepath.Join(s.dir, n)); err != nil {
			return fmt.Errorf("storage: restore: %w", err)
		}
	}
	if err := syncDir(s.fs, s.dir); err != nil {
		return err
	}
	ab, err := os.ReadFile(filepath.Join(ready, appliedName))
	if err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	idx, err := decodeApplied(ab)
	if err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	if err := writeFileAtomic(s.fs, s.dir, appliedName, ab); err != nil {
		return err
	}
	s.applied.Store(idx)
	if err := s.fs.RemoveAll(ready); err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	for _, t := range trash {
		if err := s.fs.RemoveAll(t); err != nil {
			return fmt.Errorf("storage: restore: %w", err)
		}
	}
	return syncDir(s.fs, s.dir)
}
