package main

import (
	"net/http"
)

// placeholderPage is served at "/" when no viewer is mounted.
const placeholderPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>go-ldm</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>go-ldm</h1>
<p>This server speaks the ldm.v1 API (gRPC, gRPC-Web and Connect) on this port.
The viewer is not part of this build.</p>
<p>Try <code>ldm volume list</code>, or
<code>curl -H 'Content-Type: application/json' -d '{}' http://HOST/ldm.v1.VolumeService/ListVolumes</code>.</p>
</body></html>
`

// placeholderHandler serves placeholderPage at "/" and 404 elsewhere.
func placeholderHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(placeholderPage))
	})
}
