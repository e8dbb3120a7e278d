package storage_test

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	syncpkg "sync"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/storage/ldmtest"
)

// The crash test re-executes the test binary as a child that appends to a
// store and prints one line per acknowledged tile; the parent kills it with
// SIGKILL at a random point and checks the store. Rounds run for about
// three seconds by default; -crash.rounds or LDM_CRASH_ROUNDS sets an
// exact number instead.
var crashRounds = flag.Int("crash.rounds", 0, "crash test rounds (0: as many as fit in about 3 s; env LDM_CRASH_ROUNDS)")

const (
	crashChildEnv = "LDM_CRASH_CHILD_DIR"
	crashSyncEnv  = "LDM_CRASH_CHILD_SYNC"
	crashVolume   = "crash"
	crashBlock    = 32 << 10
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashTileLen derives a tile's length from its seed, so any tile found in
// the store can be checked byte for byte: the seed is stored as its Index.
func crashTileLen(seed uint64) int { return int(seed % 6000) }

// crashChild appends from two goroutines until it is killed. Each line
// "ack OFFSET SEED" is printed only after Append returned for that tile. A
// third goroutine creates and deletes scratch volumes, printing "created
// NAME" after CreateVolume returned, "deleting NAME" before DeleteVolume
// and "deleted NAME" after it returned.
func crashChild(dir string) {
	sync, err := storage.ParseSyncPolicy(os.Getenv(crashSyncEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	s, err := storage.Open(dir, storage.Config{BlockBytes: crashBlock, Sync: sync, Logger: discardLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	if _, err := s.CreateVolume(context.Background(), ldmtest.Meta(crashVolume)); err != nil && !errors.Is(err, storage.ErrExists) {
		fmt.Fprintln(os.Stderr, "create:", err)
		os.Exit(2)
	}
	var mu syncpkg.Mutex
	fmt.Println("ready")
	deadline := time.Now().Add(30 * time.Second) // the parent kills long before
	var wg syncpkg.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		say := func(format string, a ...any) {
			mu.Lock()
			fmt.Printf(format+"\n", a...)
			mu.Unlock()
		}
		for i := 0; time.Now().Before(deadline); i++ {
			name := fmt.Sprintf("scratch-%d-%d", os.Getpid(), i)
			if _, err := s.CreateVolume(context.Background(), ldmtest.Meta(name)); err != nil {
				fmt.Fprintln(os.Stderr, "append: create:", err)
				os.Exit(2)
			}
			say("created %s", name)
			if _, err := s.Append(context.Background(), name, storage.Tile{Value: []byte(name)}); err != nil {
				fmt.Fprintln(os.Stderr, "append:", err)
				os.Exit(2)
			}
			if i%2 == 0 {
				continue // keep every other one
			}
			say("deleting %s", name)
			if err := s.DeleteVolume(context.Background(), name); err != nil {
				fmt.Fprintln(os.Stderr, "append: delete:", err)
				os.Exit(2)
			}
			say("deleted %s", name)
		}
	}()
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			for time.Now().Before(deadline) {
				tiles := make([]storage.Tile, 1+rng.IntN(4))
				for i := range tiles {
					seed := rng.Uint64()>>1 | 1
					tiles[i] = storage.Tile{Value: ldmtest.Value(seed, crashTileLen(seed)), Index: seed}
				}
				first, err := s.Append(context.Background(), crashVolume, tiles...)
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(2)
				}
				mu.Lock()
				for i, t := range tiles {
					fmt.Printf("ack %d %d\n", first+uint64(i), t.Index)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestStore_CrashRecovery(t *testing.T) {
	rounds := *crashRounds
	if env := os.Getenv("LDM_CRASH_ROUNDS"); env != "" && rounds == 0 {
		n, err := strconv.Atoi(env)
		if err != nil {
			t.Fatalf("LDM_CRASH_ROUNDS=%q: %v", env, err)
		}
		rounds = n
	}
	budget := 3 * time.Second
	dir := t.TempDir()
	acked := map[uint64]uint64{} // offset -> seed
	vols := map[string]string{}  // scratch volume -> "created", "deleting" or "deleted"
	start := time.Now()
	total := 0
	for round := 0; ; round++ {
		if rounds > 0 && round >= rounds {
			break
		}
		if rounds == 0 && round >= 5 && time.Since(start) > budget {
			break
		}
		killAfter := rand.IntN(120) // acknowledged tiles before SIGKILL; 0 kills right after start
		policy := []storage.SyncPolicy{storage.SyncBatch, storage.SyncAlways}[round%2]
		n := crashRound(t, dir, policy, killAfter, acked, vols)
		total += n
		checkCrashStore(t, dir, acked, vols)
		t.Logf("round %d: killed after %d acks (%d acknowledged so far)", round, n, len(acked))
	}
	if total == 0 {
		t.Fatal("no tile was acknowledged in any round")
	}
}

// crashRound runs one child, kills it after killAfter acknowledgements and
// records every acknowledged tile. It returns the number of acks read.
func crashRound(t *testing.T, dir string, policy storage.SyncPolicy, killAfter int, acked map[uint64]uint64, vols map[string]string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashSyncEnv+"="+policy.String())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	n := 0
	killed := false
	timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			if killAfter == 0 && !killed {
				cmd.Process.Kill()
				killed = true
			}
			continue
		}
		if state, name, ok := strings.Cut(line, " "); ok && state != "ack" {
			vols[name] = state
			continue
		}
		var off, seed uint64
		if _, err := fmt.Sscanf(line, "ack %d %d", &off, &seed); err != nil {
			t.Fatalf("child printed %q", line)
		}
		if prev, ok := acked[off]; ok && prev != seed {
			t.Fatalf("offset %d acknowledged twice (seeds %d and %d)", off, prev, seed)
		}
		acked[off] = seed
		n++
		if n >= killAfter && !killed {
			cmd.Process.Kill() // SIGKILL
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child exited before it was killed: %v\n%s", err, stderr.String())
	}
	if strings.Contains(stderr.String(), "append:") || strings.Contains(stderr.String(), "open:") {
		t.Fatalf("child failed: %s", stderr.String())
	}
	return n
}

// checkCrashStore opens the store after a crash: every acknowledged tile
// must read back byte for byte, every visible tile must be whole, and an
// append must land right after the last visible tile.
func checkCrashStore(t *testing.T, dir string, acked map[uint64]uint64, vols map[string]string) {
	t.Helper()
	s, err := storage.Open(dir, storage.Config{BlockBytes: crashBlock, Logger: discardLogger()})
	if err != nil {
		t.Fatalf("Open after crash: %v", err)
	}
	defer s.Close()
	info, err := s.Volume(crashVolume)
	if errors.Is(err, storage.ErrNotFound) && len(acked) == 0 {
		return // killed before the volume was created
	}
	if err != nil {
		t.Fatalf("Volume after crash: %v", err)
	}
	for off, seed := range acked {
		if off >= info.NextOffset {
			t.Fatalf("acknowledged offset %d lost: volume has %d tiles", off, info.NextOffset)
		}
		got, err := s.Read(crashVolume, off)
		if err != nil || got.Index != seed {
			t.Fatalf("acknowledged offset %d: index %d, %v; want seed %d", off, got.Index, err, seed)
		}
	}
	for off := range info.NextOffset {
		got, err := s.Read(crashVolume, off)
		if err != nil {
			t.Fatalf("visible offset %d after crash: %v", off, err)
		}
		if want := ldmtest.Value(got.Index, crashTileLen(got.Index)); string(got.Value) != string(want) {
			t.Fatalf("visible offset %d holds bytes that were never appended", off)
		}
		acked[off] = got.Index // durable now, whether or not it was acknowledged
	}
	seed := uint64(2*rand.Uint32() + 1)
	first, err := s.Append(context.Background(), crashVolume, storage.Tile{Value: ldmtest.Value(seed, crashTileLen(seed)), Index: seed})
	if err != nil || first != info.NextOffset {
		t.Fatalf("append after crash at %d, %v; want %d", first, err, info.NextOffset)
	}
	acked[first] = seed
	if d, err := s.Verify(context.Background()); err != nil || len(d) != 0 {
		t.Fatalf("Verify after crash: %v, %v", d, err)
	}
	// Scratch volumes: an acknowledged create survives unless a delete
	// started; an acknowledged delete stays deleted; a visible volume is
	// whole (its meta and first block open, its tiles read).
	for name, state := range vols {
		_, err := s.Volume(name)
		switch {
		case state == "created" && err != nil:
			t.Fatalf("acknowledged volume %s lost: %v", name, err)
		case state == "deleted" && !errors.Is(err, storage.ErrNotFound):
			t.Fatalf("deleted volume %s came back: %v", name, err)
		}
	}
	all, err := s.Volumes()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range all {
		for off := range v.NextOffset {
			if got, err := s.Read(v.Name, off); err != nil || (v.Name != crashVolume && string(got.Value) != v.Name) {
				t.Fatalf("volume %s tile %d after crash: %q, %v", v.Name, off, got.Value, err)
			}
		}
	}
}
