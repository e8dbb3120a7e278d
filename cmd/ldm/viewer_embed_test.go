package main

import (
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/xcheng85/go-ldm/internal/testutil"
)

// TestViewer_embeddedVolume checks that the page opened with ?volume=
// takes the volume's metadata from the page itself (the server embeds it):
// it makes no GetVolume call and still shows the volume; a name the server
// has no volume for is asked for and reported as usual.
func TestViewer_embeddedVolume(t *testing.T) {
	t.Parallel()
	base := startTestServer(t, "--demo")
	ctx := testutil.NewBrowser(t, 1280, 800)
	calls := func() []string {
		t.Helper()
		names, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`performance.getEntriesByType("resource").map(e => new URL(e.name).pathname).filter(p => p.startsWith("/ldm.v1."))`))
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?volume=demo")); err != nil {
		t.Fatal(err)
	}
	st := waitLoaded(t, ctx, "demo", time.Minute)
	if st.Error != "" {
		t.Fatalf("error shown: %q", st.Error)
	}
	got := calls()
	for _, p := range got {
		if p == "/ldm.v1.VolumeService/GetVolume" {
			t.Fatalf("the page called GetVolume for the volume it embeds: %v", got)
		}
	}
	if len(got) == 0 {
		t.Fatal("the page made no API call at all")
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?volume=nope")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.ldm && /Not found \(opening nope\)/.test(window.ldm.state().error)`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("a missing volume is not reported: %v; state %+v", err, state(t, ctx))
	}
}
