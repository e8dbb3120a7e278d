// Package pki makes the certificates a go-ldm deployment needs with
// crypto/x509 alone: a certificate authority, server certificates (for
// HTTPS and for node-to-node mutual TLS) and client certificates (whose
// common name is the client's identity).
//
// Files in a PKI directory, all PEM:
//
//	ca.pem, ca-key.pem        the CA certificate and its key
//	NAME.pem, NAME-key.pem    an issued certificate and its key
//
// Keys are ECDSA P-256 in PKCS #8 and written with mode 0600; certificates
// with mode 0644. Files are written through a temporary file that is synced
// and then linked (or, with Force, renamed) into place, so an existing file
// is never overwritten unless asked and a crash never leaves half a key.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// File names of the CA in a PKI directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// Default validity periods.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
)

// Errors.
var (
	// ErrExists: a file would be overwritten and Force is not set.
	ErrExists = errors.New("file exists")
	// ErrInvalid: a bad name, host or option.
	ErrInvalid = errors.New("invalid certificate request")
)

// Options tune a certificate. The zero value gives defaults.
type Options struct {
	// NotBefore is the start of validity; zero means now minus five minutes
	// (to tolerate clock skew).
	NotBefore time.Time
	// ValidFor is the validity period; zero means the default for the kind.
	ValidFor time.Duration
	// URIs are URI SANs to add (for example spiffe://domain/workload).
	URIs []string
}

func (o Options) window(def time.Duration) (time.Time, time.Time) {
	nb := o.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-5 * time.Minute)
	}
	d := o.ValidFor
	if d == 0 {
		d = def
	}
	return nb, nb.Add(d)
}

// CA is a loaded certificate authority.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
}

// NewCA makes a self-signed CA certificate and key.
func NewCA(commonName string, o Options) (ca *CA, keyPEM []byte, err error) {
	if commonName == "" {
		commonName = "go-ldm CA"
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	nb, na := o.window(DefaultCAValidity)
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"go-ldm"}},
		NotBefore:             nb,
		NotAfter:              na,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse: %w", err)
	}
	kp, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return &CA{Cert: cert, CertPEM: encodeCert(der), Key: key}, kp, nil
}

// InitCA makes a CA and writes ca.pem and ca-key.pem into dir (created
// with mode 0700 if missing).
func InitCA(dir, commonName string, o Options, force bool) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if !force {
		for _, f := range []string{CACertFile, CAKeyFile} {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				return nil, fmt.Errorf("pki: %s: %w (use --force to replace it)", filepath.Join(dir, f), ErrExists)
			}
		}
	}
	ca, keyPEM, err := NewCA(commonName, o)
	if err != nil {
		return nil, err
	}
	if err := WriteFile(filepath.Join(dir, CAKeyFile), keyPEM, 0o600, force); err != nil {
		return nil, err
	}
	if err := WriteFile(filepath.Join(dir, CACertFile), ca.CertPEM, 0o644, force); err != nil {
		return nil, err
	}
	return ca, nil
}

// LoadCA reads ca.pem and ca-key.pem from dir.
func LoadCA(dir string) (*CA, error) {
	cb, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w (run 'ldm certs init' first)", err)
	}
	kb, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	blk, _ := pem.Decode(cb)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pki: %s: %w: no PEM certificate", CACertFile, ErrInvalid)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", CACertFile, err)
	}
	kblk, _ := pem.Decode(kb)
	if kblk == nil {
		return nil, fmt.Errorf("pki: %s: %w: no PEM key", CAKeyFile, ErrInvalid)
	}
	k, err := x509.ParsePKCS8PrivateKey(kblk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", CAKeyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: %s: %w: key cannot sign", CAKeyFile, ErrInvalid)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: %s: %w: not a CA certificate", CACertFile, ErrInvalid)
	}
	// A key from another CA (or a crash between the two writes of InitCA
	// --force) would sign certificates that nothing verifies.
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("pki: %s: %w: the key does not belong to %s", CAKeyFile, ErrInvalid, CACertFile)
	}
	return &CA{Cert: cert, CertPEM: cb, Key: signer}, nil
}

// nameRE is the grammar of client names and output file names.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ValidateName checks a client or file name.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: name %q must match %s", ErrInvalid, name, nameRE)
	}
	if name == "anonymous" || name == "ca" {
		return fmt.Errorf("%w: name %q is reserved", ErrInvalid, name)
	}
	return nil
}

// IssueServer makes a server certificate for the given host names and IP
// addresses. It is valid for server and client authentication, so a node
// can present it to its peers for mutual TLS. Its common name is the first
// host.
func (ca *CA) IssueServer(hosts []string, o Options) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, fmt.Errorf("%w: a server certificate needs at least one host name or IP", ErrInvalid)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: strings.TrimSpace(hosts[0]), Organization: []string{"go-ldm"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if h == "" || strings.ContainsAny(h, " /:") {
			return nil, nil, fmt.Errorf("%w: host %q", ErrInvalid, h)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	return ca.issue(tmpl, o)
}

// IssueClient makes a client certificate whose common name is name: the
// identity the server sees.
func (ca *CA) IssueClient(name string, o Options) (certPEM, keyPEM []byte, err error) {
	if err := ValidateName(name); err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{"go-ldm"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl, o)
}

func (ca *CA) issue(tmpl *x509.Certificate, o Options) ([]byte, []byte, error) {
	for _, s := range o.URIs {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" {
			return nil, nil, fmt.Errorf("%w: URI %q", ErrInvalid, s)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	tmpl.NotBefore, tmpl.NotAfter = o.window(DefaultCertValidity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := sign(tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, err
	}
	kp, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), kp, nil
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	tmpl.SerialNumber = serial
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("pki: public key: %w", err)
	}
	ski := sha1.Sum(pkix)
	tmpl.SubjectKeyId = ski[:]
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("pki: sign: %w", err)
	}
	return der, nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WritePair writes NAME.pem (0644) and NAME-key.pem (0600) into dir,
// refusing to replace either unless force is set.
func WritePair(dir, name string, certPEM, keyPEM []byte, force bool) (certPath, keyPath string, err error) {
	if err := ValidateName(name); err != nil {
		return "", "", err
	}
	certPath = filepath.Join(dir, name+".pem")
	keyPath = filepath.Join(dir, name+"-key.pem")
	if !force {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Stat(p); err == nil {
				return "", "", fmt.Errorf("pki: %s: %w (use --force to replace it)", p, ErrExists)
			}
		}
	}
	if err := WriteFile(keyPath, keyPEM, 0o600, force); err != nil {
		return "", "", err
	}
	if err := WriteFile(certPath, certPEM, 0o644, force); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// WriteFile writes b to path with mode perm through a synced temporary
// file. Without force it fails with ErrExists if path exists (the final
// step is a hard link, which never replaces a file); with force it renames
// over it. The directory is synced afterwards.
func WriteFile(path string, b []byte, perm os.FileMode, force bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if force {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("pki: %s: %w (use --force to replace it)", path, ErrExists)
		}
	}
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("pki: sync %s: %w", dir, err)
	}
	return nil
}
