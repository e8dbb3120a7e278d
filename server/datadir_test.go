package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xcheng85/go-ldm/server"
)

// TestServer_New_unusable_data_dir gives New a data directory that cannot
// be created (its parent is a file; a container volume mounted without
// write permission fails the same way): New returns an error that names
// the directory, and does not panic while releasing what it opened.
func TestServer_New_unusable_data_dir(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "not-a-directory")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(file, "tiles")
	s, err := server.New(context.Background(), server.Config{Addr: "127.0.0.1:0", DataDir: dir, Logger: quiet})
	if err == nil {
		s.Close()
		t.Fatal("New with a data directory under a file succeeded")
	}
	if !strings.Contains(err.Error(), "open the store in "+dir) {
		t.Errorf("the error does not name the data directory: %v", err)
	}
}
