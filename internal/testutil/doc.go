// Package testutil is the one home of go-ldm's shared test support. Every
// package may use it, including from its internal tests: it imports the
// standard library, internal/pki and chromedp only, never a package of the
// server, so importing it never makes a cycle. (A whole server is started with
// server.New and Serve; Listen gives it a free loopback port.)
//
//   - WaitFor polls a condition until it holds or a deadline passes (tests
//     wait on conditions, never sleep for a fixed time).
//   - SyncBuffer is a bytes.Buffer safe for concurrent writers, for
//     collecting log output that goroutines write while the test reads it.
//   - Listen opens a listener on a free loopback port, closed at cleanup.
//   - PKI is a certificate authority in a temporary directory, made with
//     internal/pki (the code that makes production certificates), that
//     issues server, client and node certificates, writes them as files,
//     and builds tls.Configs and pools that trust it.
//   - NewBrowser starts headless Chromium (ChromiumPath) through chromedp
//     for the browser tests and returns a tab's context.
//
// Every helper takes a testing.TB, calls tb.Helper and fails the test
// (tb.Fatal) on error, so call sites need no error handling. Helpers are
// safe for concurrent use unless their documentation says otherwise.
package testutil
