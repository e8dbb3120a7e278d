package auth

import (
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// certReloader serves a server certificate that follows its files (see
// ServerTLS.Config). get is safe for concurrent use: one handshake at a
// time checks the files, the others present the current certificate.
type certReloader struct {
	certFile, keyFile string
	interval          time.Duration // negative: never reload
	log               *slog.Logger
	now               func() time.Time

	cert atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // held by the handshake that checks the files
	checked time.Time
	sum     [sha256.Size]byte // content of the files loaded or last tried
}

func newCertReloader(s ServerTLS) (*certReloader, error) {
	r := &certReloader{certFile: s.CertFile, keyFile: s.KeyFile, interval: s.ReloadInterval, log: s.Logger, now: time.Now}
	if r.interval == 0 {
		r.interval = DefaultReloadInterval
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.log = r.log.With("component", "tls")
	certPEM, keyPEM, sum, err := r.read()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTLSConfig, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %s and %s: %v", ErrTLSConfig, r.certFile, r.keyFile, err)
	}
	r.cert.Store(&pair)
	r.sum, r.checked = sum, r.now()
	return r, nil
}

// read returns the content of both files and its hash.
func (r *certReloader) read() (certPEM, keyPEM []byte, sum [sha256.Size]byte, err error) {
	if certPEM, err = os.ReadFile(r.certFile); err != nil {
		return nil, nil, sum, err
	}
	if keyPEM, err = os.ReadFile(r.keyFile); err != nil {
		return nil, nil, sum, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00", len(certPEM))
	h.Write(certPEM)
	h.Write(keyPEM)
	h.Sum(sum[:0])
	return certPEM, keyPEM, sum, nil
}

// get is tls.Config.GetCertificate.
func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.maybeReload()
	return r.cert.Load(), nil
}

// maybeReload loads the files again when the interval has passed since
// the last check and their content changed. A handshake that finds
// another one checking does not wait for it.
func (r *certReloader) maybeReload() {
	if r.interval < 0 || !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < r.interval {
		return
	}
	r.checked = now
	certPEM, keyPEM, sum, err := r.read()
	if err != nil {
		if sum != r.sum {
			r.log.Warn("certificate files do not read; keeping the previous certificate", "cert", r.certFile, "key", r.keyFile, "error", err)
			r.sum = sum
		}
		return
	}
	if sum == r.sum {
		return
	}
	r.sum = sum
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		r.log.Warn("new certificate does not load; keeping the previous certificate", "cert", r.certFile, "key", r.keyFile, "error", err)
		return
	}
	r.cert.Store(&pair)
	attrs := []any{"cert", r.certFile}
	if pair.Leaf != nil {
		attrs = append(attrs, "subject", pair.Leaf.Subject.CommonName, "not_after", pair.Leaf.NotAfter)
	}
	r.log.Info("certificate reloaded", attrs...)
}
