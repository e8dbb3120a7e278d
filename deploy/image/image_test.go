package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// built is the image every test reads: TestMain builds it once per run.
var built struct {
	dir    string
	result Result
	opts   Options
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ldm-image-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	built.dir = dir
	code := 1
	src, err := frozenSource(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "copying the source:", err)
	} else {
		built.opts = Options{Src: src, Out: filepath.Join(dir, "a"), Epoch: time.Unix(1767225600, 0).UTC(), Revision: "test", Stderr: os.Stderr}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		built.result, err = Build(ctx, built.opts)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "building the image:", err)
		} else {
			code = m.Run()
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// frozenSource returns the source tree the tests build from: in a git
// checkout, a copy of the committed tree (git archive HEAD) under dir, so
// that edits made to the working tree while the tests run cannot make two
// builds of one test differ; otherwise the tree itself.
func frozenSource(dir string) (string, error) {
	const root = "../.."
	if _, err := os.Stat(filepath.Join(root, ".git")); err != nil {
		return root, nil
	}
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		return "", err
	}
	archive := exec.Command("git", "-C", root, "archive", "--format=tar", "HEAD")
	extract := exec.Command("tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return "", err
	}
	extract.Stdin = pipe
	var archiveErr, extractErr bytes.Buffer
	archive.Stderr, extract.Stderr = &archiveErr, &extractErr
	if err := extract.Start(); err != nil {
		return "", err
	}
	if err := archive.Run(); err != nil {
		extract.Wait()
		return "", fmt.Errorf("git archive HEAD: %v: %s", err, archiveErr.String())
	}
	if err := extract.Wait(); err != nil {
		return "", fmt.Errorf("tar -x: %v: %s", err, extractErr.String())
	}
	return src, nil
}

// ociImage is what the tests read from an OCI layout by hand, with the
// standard library only, so go-containerregistry is checked by a second
// reader rather than by itself.
type ociImage struct {
	index struct {
		SchemaVersion int `json:"schemaVersion"`
		Manifests     []struct {
			MediaType   string            `json:"mediaType"`
			Digest      string            `json:"digest"`
			Size        int64             `json:"size"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	manifest struct {
		MediaType string `json:"mediaType"`
		Config    struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"config"`
		Layers []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
			Size      int64  `json:"size"`
		} `json:"layers"`
	}
	config struct {
		Architecture string    `json:"architecture"`
		OS           string    `json:"os"`
		Created      time.Time `json:"created"`
		Config       struct {
			User         string              `json:"User"`
			Entrypoint   []string            `json:"Entrypoint"`
			Cmd          []string            `json:"Cmd"`
			Env          []string            `json:"Env"`
			ExposedPorts map[string]struct{} `json:"ExposedPorts"`
			Volumes      map[string]struct{} `json:"Volumes"`
			Labels       map[string]string   `json:"Labels"`
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	layers [][]byte // uncompressed layer tarballs
}

// readBlob reads a blob of the layout and checks that its content matches
// its digest (and size, when given).
func readBlob(tb testing.TB, layoutDir, digest string, size int64) []byte {
	tb.Helper()
	algo, hexSum, ok := strings.Cut(digest, ":")
	if !ok || algo != "sha256" {
		tb.Fatalf("digest %q: want sha256:<hex>", digest)
	}
	b, err := os.ReadFile(filepath.Join(layoutDir, "blobs", algo, hexSum))
	if err != nil {
		tb.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hexSum {
		tb.Fatalf("blob %s: content hashes to sha256:%x", digest, sum)
	}
	if size >= 0 && int64(len(b)) != size {
		tb.Fatalf("blob %s: %d bytes, descriptor says %d", digest, len(b), size)
	}
	return b
}

// readLayout reads the image of an OCI layout directory.
func readLayout(tb testing.TB, dir string) *ociImage {
	tb.Helper()
	var img ociImage
	marker, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	if err != nil {
		tb.Fatal(err)
	}
	if !bytes.Contains(marker, []byte(`"imageLayoutVersion": "1.0.0"`)) && !bytes.Contains(marker, []byte(`"imageLayoutVersion":"1.0.0"`)) {
		tb.Fatalf("oci-layout: %s", marker)
	}
	index, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(index, &img.index); err != nil {
		tb.Fatal(err)
	}
	if img.index.SchemaVersion != 2 || len(img.index.Manifests) != 1 {
		tb.Fatalf("index.json: schema %d with %d manifests, want 2 with 1", img.index.SchemaVersion, len(img.index.Manifests))
	}
	m := img.index.Manifests[0]
	if err := json.Unmarshal(readBlob(tb, dir, m.Digest, m.Size), &img.manifest); err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(readBlob(tb, dir, img.manifest.Config.Digest, -1), &img.config); err != nil {
		tb.Fatal(err)
	}
	if len(img.manifest.Layers) != len(img.config.RootFS.DiffIDs) {
		tb.Fatalf("%d layers, %d diff ids", len(img.manifest.Layers), len(img.config.RootFS.DiffIDs))
	}
	for i, l := range img.manifest.Layers {
		zr, err := gzip.NewReader(bytes.NewReader(readBlob(tb, dir, l.Digest, l.Size)))
		if err != nil {
			tb.Fatalf("layer %s: %v", l.Digest, err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			tb.Fatalf("layer %s: %v", l.Digest, err)
		}
		if sum := sha256.Sum256(raw); "sha256:"+hex.EncodeToString(sum[:]) != img.config.RootFS.DiffIDs[i] {
			tb.Fatalf("layer %s: uncompressed sha256:%x, config says %s", l.Digest, sum, img.config.RootFS.DiffIDs[i])
		}
		img.layers = append(img.layers, raw)
	}
	return &img
}

// extract unpacks the layers into root. As root, it keeps the owners of
// the entries, so the image's user meets the same permissions it would in
// a container.
func extract(tb testing.TB, img *ociImage, root string) {
	tb.Helper()
	asRoot := os.Geteuid() == 0
	for _, layer := range img.layers {
		tr := tar.NewReader(bytes.NewReader(layer))
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				tb.Fatal(err)
			}
			name := filepath.Clean(h.Name)
			if !filepath.IsLocal(name) {
				tb.Fatalf("layer entry %q leaves the root", h.Name)
			}
			target := filepath.Join(root, name)
			switch h.Typeflag {
			case tar.TypeDir:
				if err := os.MkdirAll(target, 0o755); err != nil {
					tb.Fatal(err)
				}
			case tar.TypeReg:
				f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
				if err != nil {
					tb.Fatal(err)
				}
				if _, err := io.Copy(f, tr); err != nil {
					tb.Fatal(err)
				}
				if err := f.Close(); err != nil {
					tb.Fatal(err)
				}
			default:
				tb.Fatalf("layer entry %q: unexpected type %c", h.Name, h.Typeflag)
			}
			if err := os.Chmod(target, os.FileMode(h.Mode).Perm()|modeBits(h.Mode)); err != nil {
				tb.Fatal(err)
			}
			if asRoot {
				if err := os.Lchown(target, h.Uid, h.Gid); err != nil {
					tb.Fatal(err)
				}
			}
		}
	}
}

// modeBits turns the tar mode's setuid, setgid and sticky bits into
// os.FileMode bits.
func modeBits(m int64) os.FileMode {
	var out os.FileMode
	if m&0o4000 != 0 {
		out |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}

func TestImage_config(t *testing.T) {
	img := readLayout(t, built.result.Layout)
	if got := "sha256:" + built.result.Digest.Hex; img.index.Manifests[0].Digest != got {
		t.Errorf("index names %s, Build returned %s", img.index.Manifests[0].Digest, got)
	}
	if img.manifest.MediaType != "application/vnd.oci.image.manifest.v1+json" || img.manifest.Config.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Errorf("media types: manifest %q, config %q", img.manifest.MediaType, img.manifest.Config.MediaType)
	}
	if a := img.index.Manifests[0].Annotations; a["org.opencontainers.image.ref.name"] != "dev" || a["io.containerd.image.name"] != "docker.io/go-ldm/ldm:dev" {
		t.Errorf("index annotations %v", a)
	}
	c := img.config
	if c.OS != "linux" || c.Architecture == "" {
		t.Errorf("platform %s/%s", c.OS, c.Architecture)
	}
	if !c.Created.Equal(built.opts.Epoch) {
		t.Errorf("created %v, want SOURCE_DATE_EPOCH %v", c.Created, built.opts.Epoch)
	}
	uid, _, _ := strings.Cut(c.Config.User, ":")
	if uid == "" || uid == "0" || uid == "root" {
		t.Errorf("User %q runs as root", c.Config.User)
	}
	if c.Config.User != "65532:65532" {
		t.Errorf("User %q, want 65532:65532", c.Config.User)
	}
	if !slices.Equal(c.Config.Entrypoint, []string{"/usr/local/bin/ldm"}) {
		t.Errorf("Entrypoint %q", c.Config.Entrypoint)
	}
	if !slices.Equal(c.Config.Cmd, []string{"serve", "--data", "/data/tiles"}) {
		t.Errorf("Cmd %q", c.Config.Cmd)
	}
	if _, ok := c.Config.Volumes["/data"]; !ok || len(c.Config.Volumes) != 1 {
		t.Errorf("Volumes %v, want /data alone", c.Config.Volumes)
	}
	for _, p := range []string{"8080/tcp", "7946/tcp", "7946/udp"} {
		if _, ok := c.Config.ExposedPorts[p]; !ok {
			t.Errorf("ExposedPorts %v lacks %s", c.Config.ExposedPorts, p)
		}
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.source":   "https://github.com/xcheng85/go-ldm",
		"org.opencontainers.image.revision": "test",
		"org.opencontainers.image.created":  "2026-01-01T00:00:00Z",
	} {
		if got := c.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}

	// The layer: fixed times and owners, /data owned by the user, the
	// binary static (no interpreter, no shared libraries).
	files := map[string]*tar.Header{}
	var binary []byte
	tr := tar.NewReader(bytes.NewReader(img.layers[0]))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h
		if !h.ModTime.Equal(built.opts.Epoch) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, built.opts.Epoch)
		}
		if h.Name == "usr/local/bin/ldm" {
			if binary, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if h := files["data"]; h == nil || h.Uid != UID || h.Gid != GID {
		t.Errorf("/data: %+v, want a directory owned by %d:%d", h, UID, GID)
	}
	if h := files["tmp"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("/tmp: %+v, want mode 1777", h)
	}
	if h := files["etc/ssl/certs/ca-certificates.crt"]; h != nil {
		t.Errorf("CA certificates of the build machine are in the image without -ca-certs")
	}
	ef, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		t.Fatalf("usr/local/bin/ldm: %v", err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("usr/local/bin/ldm is dynamically linked (program header %v)", p.Type)
		}
	}
}

// rootFSCommand returns a command that runs the image's entrypoint with
// its default arguments plus extra, from the image extracted at root, in
// the image's environment only. As root, the process runs chrooted into
// root as the image's user, as in a container; otherwise it runs the
// extracted binary with the image's absolute paths moved under root.
func rootFSCommand(t *testing.T, img *ociImage, root string, args []string) *exec.Cmd {
	t.Helper()
	argv := append(slices.Clone(img.config.Config.Entrypoint), args...)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command(argv[0], argv[1:]...)
		cmd.Path = argv[0] // resolved inside the chroot, not on the host
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: UID, Gid: GID}}
	} else {
		for i, a := range argv {
			if strings.HasPrefix(a, "/") {
				argv[i] = filepath.Join(root, a)
			}
		}
		cmd = exec.Command(argv[0], argv[1:]...)
		cmd.Dir = root
	}
	cmd.Env = slices.Clone(img.config.Config.Env)
	return cmd
}

func TestImage_runs(t *testing.T) {
	img := readLayout(t, built.result.Layout)
	root, err := os.MkdirTemp("", "ldm-image-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil { // the image's user must reach it
		t.Fatal(err)
	}
	extract(t, img, root)

	t.Run("version", func(t *testing.T) {
		cmd := rootFSCommand(t, img, root, []string{"--version"})
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ldm --version: %v\n%s", err, out)
		}
		if !strings.HasPrefix(string(out), "ldm version ") {
			t.Errorf("ldm --version printed %q", out)
		}
	})

	t.Run("serve_default_args", func(t *testing.T) {
		// The image's default arguments, plus a loopback address the test
		// can reach without TLS.
		args := append(slices.Clone(img.config.Config.Cmd), "--addr", "127.0.0.1:0", "--log-format", "json")
		cmd := rootFSCommand(t, img, root, args)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				<-exited
			}
		})
		url := serveURL(t, stderr, 30*time.Second)
		go io.Copy(io.Discard, stderr)

		// The probes the Kubernetes manifests use.
		for _, path := range []string{"/livez", "/readyz"} {
			res, err := http.Get(url + path)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %s", path, res.Status)
			}
		}

		post := func(procedure, body string) (int, string) {
			t.Helper()
			res, err := http.Post(url+"/ldm.v1."+procedure, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			return res.StatusCode, string(b)
		}
		if code, body := post("VolumeService/CreateVolume", `{"volume":{"name":"img","shape":{"x":64,"y":64,"z":64},"dataType":"DATA_TYPE_UINT8"}}`); code != http.StatusOK {
			t.Fatalf("CreateVolume: %d %s", code, body)
		}
		if code, body := post("VolumeService/ListVolumes", `{}`); code != http.StatusOK || !strings.Contains(body, `"name":"img"`) {
			t.Fatalf("ListVolumes: %d %s", code, body)
		}

		// The volume is on the image's volume path, written by its user.
		fi, err := os.Stat(filepath.Join(root, "data", "tiles", "img"))
		if err != nil {
			t.Fatalf("the volume is not under /data/tiles: %v", err)
		}
		if st := fi.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && st.Uid != UID {
			t.Errorf("/data/tiles/img is owned by uid %d, want %d", st.Uid, UID)
		}

		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("ldm serve after SIGTERM: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("ldm serve did not stop within 30s of SIGTERM")
		}
	})
}

// serveURL reads the JSON log of `ldm serve` until its "serving" line and
// returns the URL it names.
func serveURL(t *testing.T, stderr io.Reader, timeout time.Duration) string {
	t.Helper()
	found := make(chan string, 1)
	var lines []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			var rec struct {
				Msg string `json:"msg"`
				URL string `json:"url"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "serving" {
				found <- strings.TrimSuffix(rec.URL, "/")
				return
			}
		}
	}()
	select {
	case u := <-found:
		return u
	case <-done:
		t.Fatalf("ldm serve exited before serving:\n%s", strings.Join(lines, "\n"))
	case <-time.After(timeout):
		t.Fatalf("no \"serving\" log line within %v", timeout)
	}
	return ""
}

func TestBuild_reproducible(t *testing.T) {
	o := built.opts
	o.Out = filepath.Join(built.dir, "b")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := Build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Digest != built.result.Digest || r.ConfigID != built.result.ConfigID {
		t.Errorf("second build: manifest %s config %s; first: %s %s", r.Digest, r.ConfigID, built.result.Digest, built.result.ConfigID)
	}
	a, err := os.ReadFile(built.result.Tarball)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(r.Tarball)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("the two tarballs differ (%d and %d bytes)", len(a), len(b))
	}

	// A different SOURCE_DATE_EPOCH is a different image: the time really
	// is in it, not the build machine's clock.
	o.Out = filepath.Join(built.dir, "c")
	o.Epoch = o.Epoch.Add(time.Second)
	r2, err := Build(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Digest == built.result.Digest {
		t.Errorf("SOURCE_DATE_EPOCH one second later gives the same digest %s", r2.Digest)
	}
}

func TestSourceDateEpoch(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"", time.Unix(0, 0).UTC(), false},
		{"1767225600", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), false},
		{"-1", time.Time{}, true},
		{"yesterday", time.Time{}, true},
	} {
		got, err := sourceDateEpoch(tc.in)
		if (err != nil) != tc.err || !got.Equal(tc.want) {
			t.Errorf("sourceDateEpoch(%q) = %v, %v; want %v, error %t", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// TestImage_matches_manifests checks that the Kubernetes manifests
// (deploy/k8s/base) agree with the image: they run as its user, mount its
// volume path, keep its entrypoint (args only) and call its binary path in
// the preStop hook.
func TestImage_matches_manifests(t *testing.T) {
	b, err := os.ReadFile("../k8s/base/statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var sts struct {
		Spec struct {
			Template struct {
				Spec struct {
					SecurityContext struct {
						RunAsUser, RunAsGroup, FSGroup *int64
					} `json:"securityContext"`
					Containers []struct {
						Command   []string `json:"command"`
						Args      []string `json:"args"`
						Lifecycle struct {
							PreStop struct {
								Exec struct {
									Command []string `json:"command"`
								} `json:"exec"`
							} `json:"preStop"`
						} `json:"lifecycle"`
						VolumeMounts []struct {
							Name      string `json:"name"`
							MountPath string `json:"mountPath"`
						} `json:"volumeMounts"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &sts); err != nil {
		t.Fatal(err)
	}
	pod := sts.Spec.Template.Spec
	sc := pod.SecurityContext
	for name, got := range map[string]*int64{"runAsUser": sc.RunAsUser, "runAsGroup": sc.RunAsGroup, "fsGroup": sc.FSGroup} {
		want := int64(UID)
		if name != "runAsUser" {
			want = GID
		}
		if got == nil {
			t.Errorf("securityContext.%s is not set, want the image's %d", name, want)
		} else if *got != want {
			t.Errorf("securityContext.%s = %d, want the image's %d", name, *got, want)
		}
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if len(c.Command) > 0 {
		t.Errorf("command %q replaces the image's entrypoint", c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != Cmd[0] {
		t.Errorf("args %q do not start with %q", c.Args, Cmd[0])
	}
	if pre := c.Lifecycle.PreStop.Exec.Command; len(pre) == 0 || pre[0] != BinaryPath {
		t.Errorf("preStop %q does not run %s", pre, BinaryPath)
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(m struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
	}) bool {
		return m.MountPath == DataDir
	}) {
		t.Errorf("nothing is mounted at the image's volume path %s", DataDir)
	}
}
