package testutil

import (
	"context"
	"os"
	"testing"

	"github.com/chromedp/chromedp"
)

// ChromiumPath is the browser the browser tests drive (Debian's chromium).
const ChromiumPath = "/usr/bin/chromium"

// NewBrowser starts headless Chromium with a window of width x height and
// returns a tab's context. The browser and its temporary profile go away
// at the end of the test. A missing browser fails the test with the
// command that installs it.
func NewBrowser(tb testing.TB, width, height int) context.Context {
	tb.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		tb.Fatalf("the browser tests need %s (%v): run `apt-get install -y chromium`", ChromiumPath, err)
	}
	dir, err := os.MkdirTemp("", "ldm-chromium-")
	if err != nil {
		tb.Fatal(err)
	}
	// Chromium's helpers may still write the profile briefly after the
	// browser exits; a leftover directory in the temp dir is harmless.
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(ChromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(width, height),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	tb.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		tb.Fatalf("start %s: %v", ChromiumPath, err)
	}
	return ctx
}
