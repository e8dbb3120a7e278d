package main

import (
	"context"
	"os"
	"testing"

	"github.com/spf13/cobra"

	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/storage"
)

// serveConfig maps `ldm serve` flags, and LDM_* variables for flags not
// given, to the server.Config the command would build.
func serveConfig(tb testing.TB, flags ...string) (server.Config, error) {
	tb.Helper()
	f := &serveFlags{}
	cmd := &cobra.Command{Use: "serve"}
	f.register(cmd.Flags())
	if err := cmd.ParseFlags(flags); err != nil {
		return server.Config{}, usageError{err}
	}
	if err := flagsFromEnv(cmd); err != nil {
		return server.Config{}, err
	}
	return f.config(cmd.Flags(), os.Stderr)
}

// startConfig builds a server from cfg as `ldm serve` does and serves it
// until the end of the test. It returns the server, or the error building
// it failed with.
func startConfig(tb testing.TB, cfg server.Config) (*server.Server, error) {
	tb.Helper()
	s, err := newServer(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("ldm serve: %v", err)
		}
	})
	return s, nil
}

// startTestServer runs `ldm serve` in-process on 127.0.0.1:0 with extra
// flags and returns its base URL. The server stops at the end of the test.
func startTestServer(tb testing.TB, flags ...string) string {
	tb.Helper()
	return startTestServerWith(tb, nil, flags...)
}

// startTestServerWith is startTestServer with a change to the server's
// Config before it is built, for example a store that injects faults.
func startTestServerWith(tb testing.TB, edit func(*server.Config), flags ...string) string {
	tb.Helper()
	args := append([]string{"--addr", "127.0.0.1:0", "--data", tb.TempDir(), "--log-level", "error", "--log-format", "json"}, flags...)
	cfg, err := serveConfig(tb, args...)
	if err != nil {
		tb.Fatalf("ldm serve %v: %v", args, err)
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := startConfig(tb, cfg)
	if err != nil {
		tb.Fatalf("ldm serve: %v", err)
	}
	return s.URL()
}

// startSecureServer runs `ldm serve` in-process with flags (which must
// include --addr) and returns its address, or the error it failed with.
func startSecureServer(tb testing.TB, flags ...string) (string, error) {
	tb.Helper()
	args := append([]string{"--data", tb.TempDir(), "--log-level", "error", "--log-format", "json"}, flags...)
	cfg, err := serveConfig(tb, args...)
	if err != nil {
		return "", err
	}
	s, err := startConfig(tb, cfg)
	if err != nil {
		return "", err
	}
	return s.Addr().String(), nil
}

// openTestStore opens the file store in cfg.DataDir, to be wrapped and
// passed back as cfg.Tiles; it is closed after the server stops.
func openTestStore(tb testing.TB, cfg *server.Config) *storage.Store {
	tb.Helper()
	st, err := storage.Open(cfg.DataDir, storage.Config{MaxTileBytes: cfg.MaxTileBytes, Sync: cfg.Sync, Logger: cfg.Logger})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}
