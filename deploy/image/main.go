// Command image builds the go-ldm container image without a Docker daemon
// or a registry: a static ldm binary on an empty base, written as an OCI
// image layout directory and as a tarball that `docker load`, `podman
// load`, `kind load image-archive` and `ctr images import` accept.
//
//	cd deploy/image && go run . -src ../.. -out ../../bin
//
// (`make image` runs exactly that.) The image is reproducible: the binary
// is built with CGO_ENABLED=0, -trimpath and an empty build id; every file
// of the one layer, the config's creation time and its history carry the
// time of SOURCE_DATE_EPOCH (default 0, the Unix epoch), entries are in a
// fixed order with fixed owners, and nothing of the build machine enters
// the image unless -ca-certs names a file. Building the same source twice
// gives the same manifest digest (TestBuild_reproducible).
//
// What is in the image:
//
//	/usr/local/bin/ldm   the binary (ENTRYPOINT; PATH includes its directory)
//	/etc/passwd, group   root and the user nonroot (65532), the image's USER
//	/etc/nsswitch.conf   hosts: files dns, for Go's resolver
//	/data                the one volume path, owned by 65532 (default args
//	                     serve --data /data/tiles, so the Raft directory,
//	                     <data>-raft, is /data/tiles-raft on the same volume)
//	/tmp                 mode 1777 (mount an emptyDir under a read-only root)
//
// The module is separate from the main one so that go-containerregistry and
// its dependencies stay out of the main go.mod.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's fixed facts, shared with the Kubernetes manifests
// (deploy/k8s) and checked by the tests.
const (
	// BinaryPath is where the ldm binary lives in the image.
	BinaryPath = "/usr/local/bin/ldm"
	// UID and GID of the user the image runs as (distroless' "nonroot").
	UID = 65532
	GID = 65532
	// DataDir is the one volume path.
	DataDir = "/data"
	// DefaultTag names the image in the tarball and the layout's index.
	DefaultTag = "go-ldm/ldm:dev"
	// LayoutDir and TarballFile are the names written under -out.
	LayoutDir   = "ldm-image"
	TarballFile = "ldm-image.tar"
)

// Entrypoint and Cmd are the image's ENTRYPOINT and default arguments.
var (
	Entrypoint = []string{BinaryPath}
	Cmd        = []string{"serve", "--data", DataDir + "/tiles"}
	// ExposedPorts: the main port (HTTP/1.1, h2c, TLS; Raft shares it) and
	// Serf gossip (TCP and UDP).
	ExposedPorts = []string{"8080/tcp", "7946/tcp", "7946/udp"}
)

// Options say what to build and where.
type Options struct {
	Src      string    // repository root (holds go.mod and cmd/ldm)
	Out      string    // directory that receives LayoutDir and TarballFile
	Arch     string    // GOARCH of the image (linux only)
	Tag      string    // reference written into the tarball and the layout index
	Epoch    time.Time // every timestamp in the image
	Version  string    // org.opencontainers.image.version label ("" leaves it out)
	Revision string    // org.opencontainers.image.revision label ("" leaves it out)
	CACerts  string    // PEM bundle copied to /etc/ssl/certs/ca-certificates.crt ("" for none)
	Stderr   io.Writer // go build's output
}

// Result describes a built image.
type Result struct {
	Layout      string  // path of the OCI layout directory
	Tarball     string  // path of the docker-load tarball
	Digest      v1.Hash // manifest digest
	ConfigID    v1.Hash // config digest (the image id docker shows)
	LayerBytes  int64   // compressed size of the layer
	BinaryBytes int64   // size of the ldm binary
}

func main() {
	var o Options
	flag.StringVar(&o.Src, "src", "../..", "repository root")
	flag.StringVar(&o.Out, "out", "../../bin", "output directory (receives "+LayoutDir+"/ and "+TarballFile+")")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the image")
	flag.StringVar(&o.Tag, "tag", DefaultTag, "image reference in the tarball and the layout index")
	flag.StringVar(&o.Version, "version", "", "org.opencontainers.image.version label")
	flag.StringVar(&o.Revision, "revision", "", "org.opencontainers.image.revision label (for example: git rev-parse HEAD)")
	flag.StringVar(&o.CACerts, "ca-certs", "", "PEM bundle to include as /etc/ssl/certs/ca-certificates.crt (none by default: ldm trusts the CAs its flags name)")
	flag.Parse()
	epoch, err := sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(2)
	}
	o.Epoch = epoch
	o.Stderr = os.Stderr
	r, err := Build(context.Background(), o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("image %s\n  digest  %s\n  config  %s\n  layer   %d bytes (binary %d bytes)\n  layout  %s\n  tarball %s\n",
		o.Tag, r.Digest, r.ConfigID, r.LayerBytes, r.BinaryBytes, r.Layout, r.Tarball)
}

// sourceDateEpoch parses SOURCE_DATE_EPOCH (seconds since the Unix epoch);
// empty means 0.
func sourceDateEpoch(s string) (time.Time, error) {
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970 (for example: git log -1 --format=%%ct)", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// Build compiles ldm and writes the image under o.Out.
func Build(ctx context.Context, o Options) (Result, error) {
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	if o.Tag == "" {
		o.Tag = DefaultTag
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	ref, err := name.NewTag(o.Tag)
	if err != nil {
		return Result{}, fmt.Errorf("-tag %q: %v", o.Tag, err)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return Result{}, err
	}
	work, err := os.MkdirTemp(o.Out, ".image-build-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(work)

	bin := filepath.Join(work, "ldm")
	if err := buildBinary(ctx, o, bin); err != nil {
		return Result{}, err
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return Result{}, err
	}
	var caCerts []byte
	if o.CACerts != "" {
		if caCerts, err = os.ReadFile(o.CACerts); err != nil {
			return Result{}, fmt.Errorf("-ca-certs: %v", err)
		}
	}
	layerTar, err := rootFS(o.Epoch, binary, caCerts)
	if err != nil {
		return Result{}, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return Result{}, err
	}
	img, err := image(o, layer, caCerts != nil)
	if err != nil {
		return Result{}, err
	}

	// Write both outputs next to each other, then move them in place, so a
	// failed build never leaves half an image under the final names.
	layoutTmp := filepath.Join(work, LayoutDir)
	lp, err := layout.Write(layoutTmp, empty.Index)
	if err != nil {
		return Result{}, err
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.TagStr(),
		"io.containerd.image.name":          containerdName(ref),
	})); err != nil {
		return Result{}, err
	}
	tarTmp := filepath.Join(work, TarballFile)
	if err := tarball.WriteToFile(tarTmp, ref, img); err != nil {
		return Result{}, err
	}
	r := Result{Layout: filepath.Join(o.Out, LayoutDir), Tarball: filepath.Join(o.Out, TarballFile), BinaryBytes: int64(len(binary))}
	if err := os.RemoveAll(r.Layout); err != nil {
		return Result{}, err
	}
	if err := os.Rename(layoutTmp, r.Layout); err != nil {
		return Result{}, err
	}
	if err := os.Rename(tarTmp, r.Tarball); err != nil {
		return Result{}, err
	}
	if r.Digest, err = img.Digest(); err != nil {
		return Result{}, err
	}
	if r.ConfigID, err = img.ConfigName(); err != nil {
		return Result{}, err
	}
	if r.LayerBytes, err = layer.Size(); err != nil {
		return Result{}, err
	}
	return r, nil
}

// containerdName is the name `ctr images import` gives the image: the
// reference in containerd's normalized form (docker.io/..., the form the
// kubelet asks for when a pod names the short reference).
func containerdName(ref name.Tag) string {
	registry := ref.RegistryStr()
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	return registry + "/" + ref.RepositoryStr() + ":" + ref.TagStr()
}

// buildBinary runs go build for a static, reproducible linux binary.
func buildBinary(ctx context.Context, o Options, out string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	args := []string{"build", "-o", abs, "-trimpath", "-ldflags=-s -w -buildid="}
	// The revision and its modified flag go into the binary (ldm --version)
	// when the source is a git checkout; they are fixed for a given tree.
	if _, err := os.Stat(filepath.Join(o.Src, ".git")); err == nil {
		args = append(args, "-buildvcs=true")
	} else {
		args = append(args, "-buildvcs=false")
	}
	args = append(args, "./cmd/ldm")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = o.Src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch, "GOFLAGS=")
	cmd.Stdout, cmd.Stderr = o.Stderr, o.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/ldm in %s: %v", o.Src, err)
	}
	return nil
}

// entry is one file or directory of the root file system.
type entry struct {
	name     string
	mode     int64
	uid, gid int
	body     []byte // nil for a directory
}

// rootFS returns the uncompressed tar of the image's one layer. Entries
// are written in the order listed (parents first), with fixed owners,
// modes and times, so the same inputs give the same bytes.
func rootFS(epoch time.Time, binary, caCerts []byte) ([]byte, error) {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, GID)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", GID)
	entries := []entry{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		{name: "etc/nsswitch.conf", mode: 0o644, body: []byte("hosts: files dns\n")},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
	}
	if caCerts != nil {
		entries = append(entries,
			entry{name: "etc/ssl/", mode: 0o755},
			entry{name: "etc/ssl/certs/", mode: 0o755},
			entry{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: caCerts})
	}
	entries = append(entries,
		entry{name: "data/", mode: 0o755, uid: UID, gid: GID},
		entry{name: "home/", mode: 0o755},
		entry{name: "home/nonroot/", mode: 0o700, uid: UID, gid: GID},
		entry{name: "tmp/", mode: 0o1777},
		entry{name: "usr/", mode: 0o755},
		entry{name: "usr/local/", mode: 0o755},
		entry{name: "usr/local/bin/", mode: 0o755},
		entry{name: strings.TrimPrefix(BinaryPath, "/"), mode: 0o755, body: binary},
	)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		if e.body == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if e.uid == UID {
			h.Uname, h.Gname = "nonroot", "nonroot"
		} else {
			h.Uname, h.Gname = "root", "root"
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// image wraps the layer in an OCI image with its config.
func image(o Options, layer v1.Layer, caCerts bool) (v1.Image, error) {
	created := v1.Time{Time: o.Epoch}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   created,
			CreatedBy: "go-ldm deploy/image: static ldm binary on an empty base",
			Comment:   "reproducible: SOURCE_DATE_EPOCH",
		},
	})
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = o.Arch
	cf.OS = "linux"
	cf.Created = created
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	if caCerts {
		env = append(env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "go-ldm",
		"org.opencontainers.image.description": "Volumetric tile store: append-only tiles, Raft replication, Connect-RPC (gRPC, gRPC-Web, Connect) on one port",
		"org.opencontainers.image.source":      "https://github.com/xcheng85/go-ldm",
		"org.opencontainers.image.created":     o.Epoch.UTC().Format(time.RFC3339),
	}
	if o.Version != "" {
		labels["org.opencontainers.image.version"] = o.Version
	}
	if o.Revision != "" {
		labels["org.opencontainers.image.revision"] = o.Revision
	}
	ports := map[string]struct{}{}
	for _, p := range ExposedPorts {
		ports[p] = struct{}{}
	}
	cf.Config = v1.Config{
		User:         fmt.Sprintf("%d:%d", UID, GID),
		Entrypoint:   Entrypoint,
		Cmd:          Cmd,
		Env:          env,
		WorkingDir:   "/home/nonroot",
		ExposedPorts: ports,
		Volumes:      map[string]struct{}{DataDir: {}},
		Labels:       labels,
		StopSignal:   "SIGTERM",
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	if _, err := img.Digest(); err != nil {
		return nil, errors.Join(errors.New("image digest"), err)
	}
	return img, nil
}
