package service_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/h2conf"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/service/auth"
)

// TestLoad_attacks_report runs three attacks at once against `ldm serve`
// (a child process, authentication on, default limits) for a bounded
// time, and reports the server's peak resident memory and a legitimate
// reader's ReadTile latency during the attacks against its idle latency:
//
//   - compressed bodies that expand to 250 MiB, sent anonymously and with
//     a wrong token, in the Connect and gRPC protocols (12 in a loop);
//   - 100 clients that ask for a 16 MiB tile and never read, and one
//     WriteTileStream of 64 MiB tiles;
//   - wrong Basic passwords in a loop (4 at a time).
//
// It runs only when LDM_LOAD is set (`make load`); LDM_LOAD_SECONDS sets
// the attack time (default 20), LDM_LOAD_ATTACKS a subset of the attacks
// (comma-separated: 2, 5r for the reads, 5w for the ingest stream, 7). It only reports; the goals are a peak
// resident memory under 1 GiB and a p99 under three times the idle p99.
func TestLoad_attacks_report(t *testing.T) {
	if os.Getenv("LDM_LOAD") == "" {
		t.Log("set LDM_LOAD=1 (or run `make load`) to run the attacks; this test only reports")
		return
	}
	seconds := 20
	if v := os.Getenv("LDM_LOAD_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 600 {
			t.Fatalf("LDM_LOAD_SECONDS=%q: want seconds from 1 to 600", v)
		}
		seconds = n
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "ldm")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/ldm").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tokensFile, usersFile := filepath.Join(dir, "tokens"), filepath.Join(dir, "users")
	tokens := map[string]string{}
	for _, s := range []struct {
		subject string
		roles   []string
	}{{"root", []string{"admin"}}, {"reader", []string{"reader"}}, {"writer", []string{"writer"}}} {
		tok, err := auth.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if err := auth.AppendToken(tokensFile, tok, s.subject, s.roles); err != nil {
			t.Fatal(err)
		}
		tokens[s.subject] = tok
	}
	if err := auth.SetUser(usersFile, "bob", "the-right-password", []string{"reader"}, 0); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "serve", "--addr", addr, "--data", filepath.Join(dir, "data"), "--tokens", tokensFile, "--users", usersFile, "--log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	url := "http://" + addr

	client := func(token string) (ldmv1connect.TileServiceClient, ldmv1connect.VolumeServiceClient) {
		tr := h2conf.Transport(nil)
		t.Cleanup(tr.CloseIdleConnections)
		hc := &http.Client{Transport: tr}
		opts := []connect.ClientOption{connect.WithReadMaxBytes(1 << 30), connect.WithSendMaxBytes(1 << 30),
			connect.WithInterceptors(headerInterceptor{"Authorization", "Bearer " + token})}
		return ldmv1connect.NewTileServiceClient(hc, url, opts...), ldmv1connect.NewVolumeServiceClient(hc, url, opts...)
	}
	adminTiles, adminVolumes := client(tokens["root"])
	ctx := context.Background()
	testutil.WaitFor(t, 30*time.Second, "the server to answer ListVolumes", func() bool {
		_, err := adminVolumes.ListVolumes(ctx, connect.NewRequest(&ldmv1.ListVolumesRequest{}))
		return err == nil
	})
	for _, v := range []string{"big", "small", "ingest"} {
		if _, err := adminVolumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
			Name: v, Shape: &ldmv1.Shape{X: 1024, Y: 1024, Z: 1024}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
		}})); err != nil {
			t.Fatal(err)
		}
	}
	for v, size := range map[string]int{"big": 16 << 20, "small": 64 << 10} {
		if _, err := adminTiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: v, Tile: &ldmv1.Tile{Value: make([]byte, size)}})); err != nil {
			t.Fatal(err)
		}
	}

	readerTiles, _ := client(tokens["reader"])
	measure := func(ctx context.Context, max int) []time.Duration {
		var lat []time.Duration
		for i := 0; i < max && ctx.Err() == nil; i++ {
			start := time.Now()
			_, err := readerTiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "small", Offset: 0}))
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				t.Errorf("legitimate ReadTile: %v", err)
				return lat
			}
			lat = append(lat, time.Since(start))
			time.Sleep(5 * time.Millisecond)
		}
		return lat
	}
	idle := measure(ctx, 300)
	rssBefore := procStatus(t, cmd.Process.Pid, "VmRSS")

	actx, stop := context.WithTimeout(ctx, time.Duration(seconds)*time.Second)
	defer stop()
	var wg sync.WaitGroup
	var counts [4]atomic.Int64               // bombs, stalled reads, ingest tiles, wrong passwords
	attacks := os.Getenv("LDM_LOAD_ATTACKS") // a subset, for example "2,5r": 2, 5r (reads), 5w (ingest), 7
	if attacks == "" {
		attacks = "2,5r,5w,7"
	}
	on := map[string]bool{}
	for _, a := range strings.Split(attacks, ",") {
		on[strings.TrimSpace(a)] = true
	}
	attack := ""
	run := func(n int, f func(i int)) {
		if !on[attack] {
			return
		}
		for i := range n {
			wg.Go(func() { f(i) })
		}
	}
	// Attack 2: compressed bodies that expand to 250 MiB.
	attack = "2"
	bomb := gzipBomb(t, 250<<20)
	h2 := &http.Client{Transport: h2conf.Transport(nil)}
	run(12, func(i int) {
		br := bombRequests[i%len(bombRequests)]
		for actx.Err() == nil {
			req, _ := http.NewRequestWithContext(actx, http.MethodPost, url+br.procedure, bytes.NewReader(br.frame(bomb)))
			for k, v := range br.header {
				req.Header.Set(k, v)
			}
			if i%2 == 1 {
				req.Header.Set("Authorization", "Bearer wrong")
			}
			if res, err := h2.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				counts[0].Add(1)
			}
		}
	})
	// Attack 5: 100 clients that ask for a 16 MiB tile and never read it.
	readerReq := func() *http.Request {
		body := []byte{0x0a, 0x03, 'b', 'i', 'g'} // ReadTileRequest{volume: "big"}
		req, _ := http.NewRequestWithContext(actx, http.MethodPost, url+ldmv1connect.TileServiceReadTileProcedure, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/proto")
		req.Header.Set("Authorization", "Bearer "+tokens["reader"])
		return req
	}
	attack = "5r"
	run(100, func(int) {
		tr := h2conf.Transport(nil)
		tr.HTTP2.MaxReceiveBufferPerConnection = 64 << 10
		tr.HTTP2.MaxReceiveBufferPerStream = 64 << 10
		defer tr.CloseIdleConnections()
		res, err := (&http.Client{Transport: tr}).Do(readerReq())
		if err != nil {
			return
		}
		counts[1].Add(1)
		<-actx.Done() // never read
		res.Body.Close()
	})
	// Attack 5: one WriteTileStream of 64 MiB tiles.
	writerTiles, _ := client(tokens["writer"])
	attack = "5w"
	run(1, func(int) {
		stream := writerTiles.WriteTileStream(actx)
		value := make([]byte, 64<<20)
		go func() {
			for {
				if _, err := stream.Receive(); err != nil {
					return
				}
			}
		}()
		for actx.Err() == nil {
			if err := stream.Send(&ldmv1.WriteTileStreamRequest{Volume: "ingest", Tile: &ldmv1.Tile{Value: value}}); err != nil {
				break
			}
			counts[2].Add(1)
		}
		_ = stream.CloseRequest()
	})
	// Attack 7: wrong Basic passwords in a loop.
	attack = "7"
	run(4, func(int) {
		tr := h2conf.Transport(nil)
		defer tr.CloseIdleConnections()
		c := ldmv1connect.NewVolumeServiceClient(&http.Client{Transport: tr}, url,
			connect.WithInterceptors(headerInterceptor{"Authorization", "Basic " + basic("bob", "a-wrong-password")}))
		for actx.Err() == nil {
			_, err := c.ListVolumes(actx, connect.NewRequest(&ldmv1.ListVolumesRequest{}))
			if connect.CodeOf(err) == connect.CodeUnauthenticated || connect.CodeOf(err) == connect.CodeResourceExhausted {
				counts[3].Add(1)
			}
		}
	})
	attacked := measure(actx, 1<<30)
	wg.Wait()

	hwm := procStatus(t, cmd.Process.Pid, "VmHWM")
	load, _ := os.ReadFile("/proc/loadavg")
	p := func(d []time.Duration, q float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, int(q*float64(len(s))))]
	}
	t.Logf("attacks %s for %ds: %d compressed bodies answered, %d stalled 16 MiB reads, %d ingest tiles of 64 MiB sent, %d wrong Basic passwords refused",
		attacks, seconds, counts[0].Load(), counts[1].Load(), counts[2].Load(), counts[3].Load())
	t.Logf("server resident memory: %d MiB before the attacks, peak (VmHWM) %d MiB (goal < 1024 MiB)", rssBefore>>10, hwm>>10)
	i50, i99, a50, a99 := p(idle, 0.5), p(idle, 0.99), p(attacked, 0.5), p(attacked, 0.99)
	t.Logf("legitimate ReadTile of 64 KiB: idle p50 %v p99 %v (%d calls); under attack p50 %v p99 %v (%d calls); ratio p50 %.1fx p99 %.1fx (goal < 3x)",
		i50, i99, len(idle), a50, a99, len(attacked), float64(a50)/float64(i50), float64(a99)/float64(i99))
	t.Logf("load average: %s", strings.TrimSpace(string(load)))
}

// basic encodes Basic credentials.
func basic(user, password string) string {
	return base64Encode(user + ":" + password)
}

// procStatus returns a "kB" field of /proc/PID/status, in KiB.
func procStatus(tb testing.TB, pid int, field string) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal(errors.New(field + " not in /proc status"))
	return 0
}

func base64Encode(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
