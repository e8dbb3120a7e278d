// Package servertest starts whole go-ldm servers for tests, as
// net/http/httptest does for handlers: Start builds a server.Config into a
// running server on a free loopback port and stops it when the test ends.
//
// It imports server, and so every package a server is made of; the
// internal tests of those packages use internal/testutil instead, which
// imports none of them.
package servertest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/xcheng85/go-ldm/server"
)

// Start builds a server from cfg and serves it until the test ends, when
// it stops the server and fails the test if Serve returned an error. Empty
// fields get test values: Addr 127.0.0.1:0 (a free port), DataDir a fresh
// tb.TempDir() (unless cfg.Tiles is set), and a Logger that discards. The
// server's base URL is s.URL().
func Start(tb testing.TB, cfg server.Config) *server.Server {
	tb.Helper()
	if cfg.Addr == "" && cfg.Listener == nil {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.DataDir == "" && cfg.Tiles == nil {
		cfg.DataDir = tb.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := server.New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("servertest: start server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("servertest: server: %v", err)
		}
	})
	return s
}
