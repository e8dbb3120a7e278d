package auth_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/service/auth"
	"github.com/xcheng85/go-ldm/storage"
)

// authServer is a service with tokens and Basic users on 127.0.0.1 (h2c),
// assembled as server.New does: Middleware, AuthenticateHTTP, the
// interceptors.
type authServer struct {
	url   string
	users *auth.Users
	hc    *http.Client
}

// reload is auth.Config.ReloadInterval (negative: never).
func startAuthServer(tb testing.TB, tokensFile, usersFile string, limit auth.BasicLimit, reload time.Duration) *authServer {
	tb.Helper()
	var authns []auth.Authenticator
	var users *auth.Users
	if tokensFile != "" {
		t, err := auth.LoadTokens(tokensFile)
		if err != nil {
			tb.Fatal(err)
		}
		authns = append(authns, t)
	}
	if usersFile != "" {
		var err error
		if users, err = auth.LoadUsersLimit(usersFile, limit); err != nil {
			tb.Fatal(err)
		}
		authns = append(authns, users)
	}
	log := slog.New(slog.DiscardHandler)
	a, err := auth.New(auth.Config{Authenticators: authns, ReloadInterval: reload, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	store := storage.NewMemory(0)
	if _, err := store.CreateVolume(context.Background(), storage.VolumeMeta{Name: "vol", Shape: storage.Shape{X: 8, Y: 8, Z: 8}, DataType: storage.Uint8}); err != nil {
		tb.Fatal(err)
	}
	svc, err := service.New(service.Config{Store: store, Logger: log, Interceptors: a.Interceptors(), Authenticate: a.AuthenticateHTTP})
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := service.NewHTTPServer(a.Middleware(svc.Handler()), nil, log)
	go srv.Serve(l)
	tb.Cleanup(func() { srv.Close() })
	tr := client.NewTransport(nil)
	tb.Cleanup(tr.CloseIdleConnections)
	return &authServer{url: "http://" + l.Addr().String(), users: users, hc: &http.Client{Transport: tr}}
}

// list calls ListVolumes with an Authorization header value.
func (s *authServer) list(ctx context.Context, authorization string) (http.Header, error) {
	c := ldmv1connect.NewVolumeServiceClient(s.hc, s.url)
	req := connect.NewRequest(&ldmv1.ListVolumesRequest{})
	req.Header().Set("Authorization", authorization)
	_, err := c.ListVolumes(ctx, req)
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Meta(), err
	}
	return nil, err
}

// writeCredentials writes a token file with one token for alice (reader)
// and a users file with bob (reader), password "right", at bcrypt's
// lowest cost.
func writeCredentials(tb testing.TB) (tokensFile, usersFile, token string) {
	tb.Helper()
	dir := tb.TempDir()
	tokensFile, usersFile = filepath.Join(dir, "tokens"), filepath.Join(dir, "users")
	token, err := auth.NewToken()
	if err != nil {
		tb.Fatal(err)
	}
	if err := auth.AppendToken(tokensFile, token, "alice", []string{"reader"}); err != nil {
		tb.Fatal(err)
	}
	if err := auth.SetUser(usersFile, "bob", "right", []string{"reader"}, bcrypt.MinCost); err != nil {
		tb.Fatal(err)
	}
	return tokensFile, usersFile, token
}

// TestUsers_FailedBasicIsLimited floods the server with wrong passwords
// (for a known user and for made-up ones) while a token client and a Basic
// client whose password was checked before keep calling. The flood runs
// bcrypt no more often than the failure bucket allows and never more than
// one check at once; everything past it is ResourceExhausted with retry
// information; the valid calls all succeed, and the cached password costs
// no bcrypt.
func TestUsers_FailedBasicIsLimited(t *testing.T) {
	t.Parallel()
	tokensFile, usersFile, token := writeCredentials(t)
	const burst = 5
	s := startAuthServer(t, tokensFile, usersFile, auth.BasicLimit{Concurrent: 1, Queue: 2, Burst: burst, PerSecond: 1e-6}, -1)
	ctx := context.Background()
	bob := auth.FormatBasic("bob", "right")
	if _, err := s.list(ctx, bob); err != nil {
		t.Fatalf("bob before the flood: %v", err)
	}
	if got := s.users.Stats().Checks; got != 1 {
		t.Fatalf("%d bcrypt checks for one sign-in, want 1", got)
	}

	const attackers, perAttacker = 8, 25
	var (
		wg                    sync.WaitGroup
		mu                    sync.Mutex
		exhausted, unauth     int
		other                 []error
		validCalls, validErrs int
	)
	for a := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perAttacker {
				user := "bob"
				if i%2 == 1 {
					user = fmt.Sprintf("nobody%d", a*perAttacker+i)
				}
				_, err := s.list(ctx, auth.FormatBasic(user, fmt.Sprintf("wrong-%d-%d", a, i)))
				mu.Lock()
				switch connect.CodeOf(err) {
				case connect.CodeResourceExhausted:
					exhausted++
				case connect.CodeUnauthenticated:
					unauth++
				default:
					other = append(other, err)
				}
				mu.Unlock()
			}
		}()
	}
	// The valid clients call while the flood runs.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for stop := false; !stop; {
		select {
		case <-done:
			stop = true
		default:
		}
		for _, h := range []string{auth.FormatBearer(token), bob} {
			validCalls++
			if _, err := s.list(ctx, h); err != nil {
				validErrs++
				t.Errorf("valid call during the flood: %v", err)
			}
		}
		if validCalls > 2000 {
			break // bounded whatever the flood does
		}
	}
	<-done
	if len(other) > 0 {
		t.Fatalf("flood answers other than ResourceExhausted or Unauthenticated: %v", other[0])
	}
	st := s.users.Stats()
	t.Logf("flood of %d: %d unauthenticated, %d resource exhausted; %d bcrypt checks, peak %d at once; %d valid calls", attackers*perAttacker, unauth, exhausted, st.Checks, st.Peak, validCalls)
	if st.Checks > 1+burst {
		t.Fatalf("%d bcrypt checks, want at most %d (one sign-in and a burst of %d failures)", st.Checks, 1+burst, burst)
	}
	if st.Peak > 1 {
		t.Fatalf("%d bcrypt checks ran at once, want at most 1", st.Peak)
	}
	if unauth > burst || exhausted < attackers*perAttacker-burst {
		t.Fatalf("%d unauthenticated, %d resource exhausted: want at most %d bcrypt failures", unauth, exhausted, burst)
	}

	// The limited answer says when to retry; the cached password still
	// works without bcrypt.
	meta, err := s.list(ctx, auth.FormatBasic("bob", "yet-another"))
	if connect.CodeOf(err) != connect.CodeResourceExhausted || meta.Get("Retry-After") == "" {
		t.Fatalf("after the flood: %v, Retry-After %q", err, meta.Get("Retry-After"))
	}
	var ce *connect.Error
	errors.As(err, &ce)
	var retry *errdetails.RetryInfo
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if r, ok := v.(*errdetails.RetryInfo); ok {
				retry = r
			}
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() < time.Second {
		t.Fatalf("no RetryInfo of a second or more in %v", ce.Details())
	}
	before := s.users.Stats().Checks
	if _, err := s.list(ctx, bob); err != nil {
		t.Fatalf("bob after the flood: %v", err)
	}
	if got := s.users.Stats().Checks; got != before {
		t.Fatalf("a cached password ran bcrypt (%d checks, was %d)", got, before)
	}
}

// TestUsers_BasicLimitRefills refuses a client that used up its burst of
// failures, counts a repeated wrong password (cached) only once, and lets
// the right password in again once the bucket refills.
func TestUsers_BasicLimitRefills(t *testing.T) {
	t.Parallel()
	tokensFile, usersFile, _ := writeCredentials(t)
	s := startAuthServer(t, tokensFile, usersFile, auth.BasicLimit{Burst: 2, PerSecond: 20}, -1)
	ctx := context.Background()
	for _, p := range []string{"wrong-a", "wrong-a", "wrong-a", "wrong-b"} {
		if _, err := s.list(ctx, auth.FormatBasic("bob", p)); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("wrong password %s: %v, want unauthenticated", p, err)
		}
	}
	if got := s.users.Stats().Checks; got != 2 {
		t.Fatalf("%d bcrypt checks for two distinct wrong passwords, want 2", got)
	}
	testutil.WaitFor(t, 10*time.Second, "the right password after the bucket refills", func() bool {
		_, err := s.list(ctx, auth.FormatBasic("bob", "right"))
		if err != nil && connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Fatalf("right password: %v", err)
		}
		return err == nil
	})
}
