package service_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/coalesce"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// The server-CPU comparison: go-ldm and a grpc-go server that answers
// ReadTile with pre-encoded responses from memory (no per-call work, the
// fair limit since tiles never change) each run in a process of their own
// (this test binary started again with LDM_BENCH_SERVE), so the CPU time
// each server process uses is its own, read from /proc/<pid>/stat. Both
// are read by the same grpc-go client with a pass-through codec; go-ldm
// also by a connect-go client (Connect protocol, pass-through codec).

// TestMain runs a benchmark server instead of the tests when
// LDM_BENCH_SERVE is set (see startServerProcess).
func TestMain(m *testing.M) {
	if kind := os.Getenv("LDM_BENCH_SERVE"); kind != "" {
		if err := serveBench(kind); err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// rawCodec passes message bytes through (*[]byte both ways; Unmarshal
// copies, as tileperf's client does), so the clients measure the servers,
// not their own protobuf decoding.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// perfTiles returns the tiles both servers serve, as the store holds them.
func perfTiles(size int) []storage.Tile {
	tiles := make([]storage.Tile, benchTiles)
	for i := range tiles {
		v := tileBytes(size, byte(i))
		tiles[i] = storage.Tile{Value: v, Offset: uint64(i), CRC32C: storage.Checksum(v), HasKey: true, Key: storage.BrickKey{X: uint32(i % 4), Y: uint32(i / 4)}}
	}
	return tiles
}

// serveBench serves kind ("ldm", "baseline" or "nethttp") with LDM_BENCH_SIZE-byte
// tiles on 127.0.0.1:0, prints "addr <host:port>" and serves until its
// standard input closes. LDM_BENCH_CPUPROFILE and LDM_BENCH_MEMPROFILE
// name profile files written at the end.
func serveBench(kind string) error {
	size, err := strconv.Atoi(os.Getenv("LDM_BENCH_SIZE"))
	if err != nil {
		return fmt.Errorf("LDM_BENCH_SIZE: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tiles := perfTiles(size)
	var stop func()
	// The servers built on net/http serve through coalesce.Listener, as
	// server.Server does; the ...-plain kinds without it.
	kind, plain := strings.CutSuffix(kind, "-plain")
	if !plain && kind != "baseline" {
		l = coalesce.Listener(l)
	}
	switch kind {
	case "ldm":
		dir, err := os.MkdirTemp("", "ldm-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		store, err := storage.Open(dir, storage.Config{Sync: storage.SyncNone})
		if err != nil {
			return err
		}
		defer store.Close()
		ctx := context.Background()
		if _, err := store.CreateVolume(ctx, storage.VolumeMeta{Name: "bench", Shape: storage.Shape{X: 4096, Y: 4096, Z: 64}, DataType: storage.Uint8}); err != nil {
			return err
		}
		for _, t := range tiles {
			if _, err := store.Append(ctx, "bench", storage.Tile{Value: t.Value, HasKey: true, Key: t.Key}); err != nil {
				return err
			}
		}
		svc, err := service.New(service.Config{Store: store, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return err
		}
		srv := service.NewHTTPServer(svc.Handler(), nil, nil)
		go srv.Serve(l)
		stop = func() { srv.Close() }
	case "baseline":
		// Exactly what go-ldm answers, encoded once.
		resp := make([][]byte, len(tiles))
		for i, t := range tiles {
			if resp[i], err = proto.Marshal(&ldmv1.ReadTileResponse{Tile: &ldmv1.Tile{Value: t.Value, Offset: t.Offset, Crc32C: t.CRC32C, Key: &ldmv1.BrickKey{X: t.Key.X, Y: t.Key.Y}}}); err != nil {
				return err
			}
		}
		gs := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, st grpc.ServerStream) error {
			var in []byte
			if err := st.RecvMsg(&in); err != nil {
				return err
			}
			var req ldmv1.ReadTileRequest
			if err := proto.Unmarshal(in, &req); err != nil {
				return err
			}
			return st.SendMsg(&resp[req.GetOffset()%uint64(len(resp))])
		}))
		go gs.Serve(l)
		stop = gs.Stop
	case "nethttp":
		// The floor of any connect-go server: net/http's HTTP/2 server
		// answering gRPC with the same pre-encoded responses, each written
		// with its envelope in one Write, no connect-go.
		framed := make([][]byte, len(tiles))
		for i, t := range tiles {
			m, err := proto.Marshal(&ldmv1.ReadTileResponse{Tile: &ldmv1.Tile{Value: t.Value, Offset: t.Offset, Crc32C: t.CRC32C, Key: &ldmv1.BrickKey{X: t.Key.X, Y: t.Key.Y}}})
			if err != nil {
				return err
			}
			framed[i] = append([]byte{0, byte(len(m) >> 24), byte(len(m) >> 16), byte(len(m) >> 8), byte(len(m))}, m...)
		}
		srv := service.NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			var req ldmv1.ReadTileRequest
			if err == nil && len(body) >= 5 {
				err = proto.Unmarshal(body[5:], &req)
			}
			w.Header().Set("Content-Type", "application/grpc")
			if err != nil || len(body) < 5 {
				w.Header().Set("Grpc-Status", "3")
				return
			}
			_, _ = w.Write(framed[req.GetOffset()%uint64(len(framed))])
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		}), nil, nil)
		go srv.Serve(l)
		stop = func() { srv.Close() }
	default:
		return fmt.Errorf("LDM_BENCH_SERVE=%q: want ldm, baseline or nethttp (ldm and nethttp with -plain: no coalesce.Listener)", kind)
	}
	if p := os.Getenv("LDM_BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	fmt.Printf("addr %s\n", l.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	stop()
	if p := os.Getenv("LDM_BENCH_MEMPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return pprof.Lookup("allocs").WriteTo(f, 0)
	}
	return nil
}

// serverProcess is a benchmark server in a process of its own.
type serverProcess struct {
	addr string
	cmd  *exec.Cmd
}

// startServerProcess starts this test binary as a kind server with tiles
// of size bytes and stops it when tb ends.
func startServerProcess(tb testing.TB, kind string, size int) *serverProcess {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LDM_BENCH_SERVE="+kind, "LDM_BENCH_SIZE="+strconv.Itoa(size))
	if d := os.Getenv("LDM_PERF_PROFILE_DIR"); d != "" {
		cmd.Env = append(cmd.Env, "LDM_BENCH_CPUPROFILE="+fmt.Sprintf("%s/%s-%d.cpu", d, kind, size), "LDM_BENCH_MEMPROFILE="+fmt.Sprintf("%s/%s-%d.alloc", d, kind, size))
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "addr ")
	if err != nil || !ok {
		tb.Fatalf("bench server %s did not start: %q, %v", kind, line, err)
	}
	return &serverProcess{addr: addr, cmd: cmd}
}

// cpu returns the CPU time (user and system) the server process has used.
func (p *serverProcess) cpu(tb testing.TB) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which ends with the last ')':
	// state is field 3, utime 14, stime 15 (clock ticks).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticks
}

// syscalls returns the number of read and write system calls (read, readv;
// write, writev) the server process has made, from /proc/<pid>/io (syscr,
// syscw).
func (p *serverProcess) syscalls(tb testing.TB) (reads, writes int64) {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	found := 0
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "syscr" && k != "syscw") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		if k == "syscr" {
			reads = n
		} else {
			writes = n
		}
		found++
	}
	if found != 2 {
		tb.Fatalf("/proc/%d/io has no syscr and syscw", p.cmd.Process.Pid)
	}
	return reads, writes
}

// readTileRequest is the request for tile i, encoded.
func readTileRequest(i int) []byte {
	b, _ := proto.Marshal(&ldmv1.ReadTileRequest{Volume: "bench", Offset: uint64(i % benchTiles)})
	return b
}

// grpcRawCall returns ReadTile through grpc-go with the pass-through codec
// (the client of tileperf: grpc-go's defaults).
func grpcRawCall(tb testing.TB, addr string) benchCall {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return func(ctx context.Context, i int) (int, error) {
		in, out := readTileRequest(i), []byte(nil)
		err := conn.Invoke(ctx, "/ldm.v1.TileService/ReadTile", &in, &out)
		return len(out), err
	}
}

// connectRawCall returns ReadTile through connect-go (Connect protocol,
// pass-through codec) over service.NewTransport.
func connectRawCall(tb testing.TB, addr string) benchCall {
	tr := service.NewTransport(nil)
	tb.Cleanup(tr.CloseIdleConnections)
	c := connect.NewClient[[]byte, []byte](&http.Client{Transport: tr}, "http://"+addr+"/ldm.v1.TileService/ReadTile",
		connect.WithCodec(rawCodec{}), connect.WithReadMaxBytes(1<<30))
	return func(ctx context.Context, i int) (int, error) {
		in := readTileRequest(i)
		res, err := c.CallUnary(ctx, connect.NewRequest(&in))
		if err != nil {
			return 0, err
		}
		return len(*res.Msg), nil
	}
}

// perfTarget is a server process and a client of it.
type perfTarget struct {
	name   string
	server string // a serveBench kind
	client func(tb testing.TB, addr string) benchCall
}

var perfTargets = []perfTarget{
	{"baseline_grpcgo", "baseline", grpcRawCall},
	{"ldm_grpcgo", "ldm", grpcRawCall},
	{"ldm_connect", "ldm", connectRawCall},
	{"nethttp_grpcgo", "nethttp", grpcRawCall}, // the floor of net/http's HTTP/2 server
	// Without coalesce.Listener: each HTTP/2 frame in a write of its own.
	{"ldmplain_grpcgo", "ldm-plain", grpcRawCall},
	{"ldmplain_connect", "ldm-plain", connectRawCall},
	{"nethttpplain_grpcgo", "nethttp-plain", grpcRawCall},
}

// loadResult is one measured window of a target.
type loadResult struct {
	bytes   int64
	elapsed time.Duration
	cpu     time.Duration // the server process's
	reads   int64         // the server process's read system calls
	writes  int64         // the server process's write system calls
	calls   int64
}

func (r loadResult) mbps() float64 { return float64(r.bytes) / r.elapsed.Seconds() / 1e6 }

// cpuPerGB is the server's CPU seconds per GB served.
func (r loadResult) cpuPerGB() float64 { return r.cpu.Seconds() / (float64(r.bytes) / 1e9) }

// readsPerCall is the server's read system calls per call.
func (r loadResult) readsPerCall() float64 { return float64(r.reads) / float64(max(r.calls, 1)) }

// kibPerWrite is the mean size of the server's socket writes, in KiB.
func (r loadResult) kibPerWrite() float64 { return float64(r.bytes) / 1024 / float64(max(r.writes, 1)) }

// loadFor runs conc workers calling call for d (and at most maxCalls
// calls), after a short warm-up, and measures the server's CPU time.
func loadFor(tb testing.TB, p *serverProcess, call benchCall, conc int, d time.Duration, maxCalls int64, size int) loadResult {
	tb.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range conc {
		wg.Go(func() { _, _ = call(ctx, i) })
	}
	wg.Wait()
	var n, calls atomic.Int64
	var firstErr atomic.Pointer[error]
	deadline := time.Now().Add(d)
	var done atomic.Int64
	cpu0 := p.cpu(tb)
	r0, w0 := p.syscalls(tb)
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			for i := w; time.Now().Before(deadline) && calls.Add(1) <= maxCalls; i += conc {
				k, err := call(ctx, i)
				if err == nil && k < size {
					err = fmt.Errorf("call %d received %d bytes, want at least %d", i, k, size)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				n.Add(int64(k))
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), p.cpu(tb)-cpu0
	r1, w1 := p.syscalls(tb)
	r := loadResult{bytes: n.Load(), elapsed: elapsed, cpu: cpu, reads: r1 - r0, writes: w1 - w0, calls: done.Load()}
	if e := firstErr.Load(); e != nil {
		tb.Fatal(*e)
	}
	return r
}

// BenchmarkReadTile_preencoded measures ReadTile of go-ldm (grpc-go and
// Connect clients) and of the pre-encoded grpc-go baseline, each server in
// a process of its own, at 64 concurrent calls, and reports MB/s and the
// server process's CPU per GB. Names: <size>/<target>.
func BenchmarkReadTile_preencoded(b *testing.B) {
	for _, size := range benchSizes {
		for _, target := range perfTargets {
			b.Run(fmt.Sprintf("%dKiB/%s", size>>10, target.name), func(b *testing.B) {
				p := startServerProcess(b, target.server, size)
				call := target.client(b, p.addr)
				b.ResetTimer() // MB/s-wall is the measured window alone, after a warm-up
				r := loadFor(b, p, call, 64, time.Hour, int64(b.N), size)
				b.SetBytes(int64(size))
				b.ReportMetric(r.cpuPerGB(), "server-cpu-s/GB")
				b.ReportMetric(r.kibPerWrite(), "KiB/write")
				b.ReportMetric(r.readsPerCall(), "reads/call")
				b.ReportMetric(r.mbps(), "MB/s-wall")
			})
		}
	}
}

// preencodedReport runs the targets for rounds rounds, alternating their
// order, and returns the report table: the median MB/s and server CPU per
// GB of each target, and the range of go-ldm/baseline ratios (taken within
// a round) over the rounds.
func preencodedReport(t *testing.T, rounds int, d time.Duration, cases *regexp.Regexp) string {
	var out strings.Builder
	fmt.Fprintf(&out, "ReadTile, 64 concurrent calls, each server in its own process (server CPU from /proc/<pid>/stat)\n")
	fmt.Fprintf(&out, "%-6s %-19s %8s %9s %10s %10s %22s %22s\n", "size", "target", "MB/s", "cpu-s/GB", "KiB/write", "reads/call", "ratio MB/s (min-max)", "ratio cpu/GB (min-max)")
	for _, size := range benchSizes {
		if !cases.MatchString(fmt.Sprintf("ReadTile/%dK/c64", size>>10)) {
			continue
		}
		procs := map[string]*serverProcess{}
		calls := map[string]benchCall{}
		targets := perfTargets
		if v := os.Getenv("LDM_PERF_TARGETS"); v != "" {
			re := regexp.MustCompile(v)
			targets = slices.DeleteFunc(slices.Clone(perfTargets), func(pt perfTarget) bool { return pt.server != "baseline" && !re.MatchString(pt.name) })
		}
		for _, target := range targets {
			if procs[target.server] == nil {
				procs[target.server] = startServerProcess(t, target.server, size)
			}
			calls[target.name] = target.client(t, procs[target.server].addr)
		}
		res := map[string][]loadResult{}
		ratio := map[string][]float64{}
		cpuRatio := map[string][]float64{}
		for round := range rounds {
			got := map[string]loadResult{}
			for k := range targets {
				target := targets[(k+round)%len(targets)]
				r := loadFor(t, procs[target.server], calls[target.name], 64, d, 1<<40, size)
				got[target.name] = r
				res[target.name] = append(res[target.name], r)
			}
			base := got["baseline_grpcgo"]
			for _, target := range targets[1:] {
				ratio[target.name] = append(ratio[target.name], got[target.name].mbps()/base.mbps())
				cpuRatio[target.name] = append(cpuRatio[target.name], got[target.name].cpuPerGB()/base.cpuPerGB())
			}
		}
		for _, target := range targets {
			var mb, cpu, kw, rc []float64
			for _, r := range res[target.name] {
				mb, cpu, kw, rc = append(mb, r.mbps()), append(cpu, r.cpuPerGB()), append(kw, r.kibPerWrite()), append(rc, r.readsPerCall())
			}
			rr, cr := "", ""
			if target.server != "baseline" {
				rr = fmt.Sprintf("%.2fx (%.2f-%.2f)", medianOf(ratio[target.name]), slices.Min(ratio[target.name]), slices.Max(ratio[target.name]))
				cr = fmt.Sprintf("%.2fx (%.2f-%.2f)", medianOf(cpuRatio[target.name]), slices.Min(cpuRatio[target.name]), slices.Max(cpuRatio[target.name]))
			}
			fmt.Fprintf(&out, "%5dK %-19s %8.0f %9.3f %10.1f %10.2f %22s %22s\n", size>>10, target.name, medianOf(mb), medianOf(cpu), medianOf(kw), medianOf(rc), rr, cr)
		}
	}
	return out.String()
}

func medianOf(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestService_PreencodedReport prints the comparison with the pre-encoded
// baseline when LDM_PERF is set (make perf runs it); LDM_PERF_ROUNDS sets
// the rounds (default 3), LDM_PERF_SECONDS the window of each target in a
// round (default 2), LDM_PERF_CASES selects sizes ("ReadTile/2048K/c64"),
// LDM_PERF_TARGETS selects the other targets by a regular expression
// ("ldm_grpcgo", "ldm_connect", "nethttp_grpcgo", and the same servers
// without coalesce.Listener: "ldmplain_grpcgo", "ldmplain_connect",
// "nethttpplain_grpcgo"; the baseline always runs), LDM_PERF_PROFILE_DIR
// writes each server's CPU and allocation profiles. Besides MB/s and CPU
// per GB it reports each server's mean socket write (KiB/write) and read
// system calls per call (reads/call).
func TestService_PreencodedReport(t *testing.T) {
	if os.Getenv("LDM_PERF") == "" {
		t.Log("set LDM_PERF=1 (or run `make perf`) to measure; this test only reports")
		return
	}
	rounds, err := envInt("LDM_PERF_ROUNDS", 3)
	if err != nil {
		t.Fatal(err)
	}
	secs, err := envInt("LDM_PERF_SECONDS", 2)
	if err != nil {
		t.Fatal(err)
	}
	cases := regexp.MustCompile(os.Getenv("LDM_PERF_CASES"))
	t.Log("\n" + preencodedReport(t, rounds, time.Duration(secs)*time.Second, cases))
}

func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, errors.New(name + "=" + strconv.Quote(v) + ": want a positive number")
	}
	return n, nil
}
