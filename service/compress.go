package service

import (
	"compress/gzip"
	"io"

	"connectrpc.com/connect"
)

// limitedGzip returns the gzip compression option of a handler whose
// largest message is max bytes: its decompressor ends after max+1 bytes.
// connect-go stops at max+1 and fails the call with ResourceExhausted, but
// then decompresses the rest of the body only to report its size; ending
// the stream there saves that work (a 250 KiB body can expand to 250 MiB
// of CPU time otherwise).
func limitedGzip(max int) connect.HandlerOption {
	return connect.WithCompression("gzip",
		func() connect.Decompressor { return &limitedGzipReader{max: int64(max) + 1} },
		func() connect.Compressor { return gzip.NewWriter(io.Discard) },
	)
}

// limitedGzipReader is a gzip reader that reports the end of the stream
// after max bytes.
type limitedGzipReader struct {
	gzip.Reader
	max, left int64
}

func (r *limitedGzipReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.Reader.Read(p)
	r.left -= int64(n)
	return n, err
}

func (r *limitedGzipReader) Reset(src io.Reader) error {
	r.left = r.max
	return r.Reader.Reset(src)
}
