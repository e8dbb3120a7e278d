// Package testutil starts whole go-ldm servers for tests: StartServer
// builds a server.Config into a running server on a free loopback port and
// stops it when the test ends.
//
// It imports the server package and therefore every package a server is
// made of, so the internal tests of those packages (package storage,
// package cluster, package auth) cannot import it without an import cycle.
// Helpers with no such dependency live in the leaf package
// internal/testutil/testkit: waiting on a condition with a deadline
// (WaitFor), a buffer safe for concurrent writers (SyncBuffer) and a test
// certificate authority built on internal/pki (NewPKI). Any test in the
// module may import testkit.
//
// Helpers take a testing.TB, call tb.Helper, fail the test on error and
// release what they start with tb.Cleanup.
package testutil
