package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testConfig returns a config for a server on a random port with its own
// temporary data directory.
func testConfig(t *testing.T) Config {
	t.Helper()
	return Config{Port: RandomPort, DataDir: t.TempDir()}
}

// startServer starts a server and shuts it down when the test ends.
func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// closeOnCleanup closes nc when the test ends.
func closeOnCleanup(t *testing.T, nc *nats.Conn) *nats.Conn {
	t.Helper()
	t.Cleanup(nc.Close)
	return nc
}

func dialTCP(t *testing.T, s *Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connect to %s: %v", s.ClientURL(), err)
	}
	return closeOnCleanup(t, nc)
}

func dialInProcess(t *testing.T, s *Server) *nats.Conn {
	t.Helper()
	nc, err := s.Connect()
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return closeOnCleanup(t, nc)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// bucket opens the key-value bucket "leases" over nc, creating it if needed.
func bucket(t *testing.T, nc *nats.Conn) jetstream.KeyValue {
	t.Helper()
	ctx := testContext(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New: %v", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "leases"})
	if err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return kv
}

func put(t *testing.T, kv jetstream.KeyValue, key, value string) {
	t.Helper()
	if _, err := kv.Put(testContext(t), key, []byte(value)); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func wantValue(t *testing.T, kv jetstream.KeyValue, key, want string) {
	t.Helper()
	e, err := kv.Get(testContext(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if got := string(e.Value()); got != want {
		t.Fatalf("get %s = %q, want %q", key, got, want)
	}
}

func TestKeyValueOverTCPAndInProcess(t *testing.T) {
	t.Parallel()
	s := startServer(t, testConfig(t))

	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil {
		t.Fatalf("Addr() = %q: %v", s.Addr(), err)
	}
	if host != DefaultHost || port == "0" || port == strconv.Itoa(DefaultPort) {
		t.Errorf("Addr() = %q, want %s with a random port", s.Addr(), DefaultHost)
	}
	if want := "nats://" + s.Addr(); s.ClientURL() != want {
		t.Errorf("ClientURL() = %q, want %q", s.ClientURL(), want)
	}
	if s.NATSServer() == nil || !s.NATSServer().JetStreamEnabled() {
		t.Fatal("NATSServer() is nil or has JetStream disabled")
	}

	viaTCP := bucket(t, dialTCP(t, s))
	viaMem := bucket(t, dialInProcess(t, s))
	put(t, viaTCP, "tcp", "written over TCP")
	put(t, viaMem, "mem", "written in-process")
	wantValue(t, viaMem, "tcp", "written over TCP")
	wantValue(t, viaTCP, "mem", "written in-process")
}

// Interest sees a TCP client's subscription once the server has it, and
// not after it is gone.
func TestInterestFollowsSubscriptions(t *testing.T) {
	t.Parallel()
	s := startServer(t, testConfig(t))
	nc := dialTCP(t, s)
	const subject = "lease.expired.ns.l"
	if s.Interest(subject) {
		t.Fatalf("Interest(%q) before any subscription", subject)
	}
	sub, err := nc.SubscribeSync("lease.expired.ns.*")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the server has the subscription
		t.Fatal(err)
	}
	if !s.Interest(subject) {
		t.Errorf("Interest(%q) = false with a subscription to lease.expired.ns.*", subject)
	}
	if s.Interest("lease.claimed.ns.l") {
		t.Error("Interest in a subject nobody subscribes to")
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if s.Interest(subject) {
		t.Errorf("Interest(%q) after unsubscribing", subject)
	}
}

func TestDontListen(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Port = 0 // would be 4222, but nothing must listen
	cfg.DontListen = true
	s := startServer(t, cfg)

	if s.Addr() != "" || s.ClientURL() != "" {
		t.Errorf("Addr() = %q, ClientURL() = %q; want both empty", s.Addr(), s.ClientURL())
	}
	if a := s.NATSServer().Addr(); a != nil {
		t.Errorf("server listens on %v", a)
	}
	kv := bucket(t, dialInProcess(t, s))
	put(t, kv, "k", "v")
	wantValue(t, kv, "k", "v")
}

func TestDataSurvivesRestart(t *testing.T) {
	t.Parallel()
	for _, noSync := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoSync=%v", noSync), func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			cfg.NoSync = noSync

			first := startServer(t, cfg)
			if got := first.NATSServer().JetStreamConfig().SyncAlways; got == noSync {
				t.Errorf("SyncAlways = %v with NoSync = %v", got, noSync)
			}
			nc := dialInProcess(t, first)
			put(t, bucket(t, nc), "k", "v1")
			nc.Close()
			first.Shutdown()

			second := startServer(t, cfg)
			wantValue(t, bucket(t, dialInProcess(t, second)), "k", "v1")
		})
	}
}

func TestADataDirServesOneServerAtATime(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	first := startServer(t, cfg)
	s, err := Start(cfg)
	if err == nil {
		s.Shutdown()
		t.Fatal("a second server started on a data dir in use")
	}
	if !strings.Contains(err.Error(), "in use by another running server") || !strings.Contains(err.Error(), cfg.DataDir) {
		t.Errorf("error %q does not say the data dir %s is in use", err, cfg.DataDir)
	}
	first.Shutdown()
	startServer(t, cfg) // free again
}

func TestPortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	port := l.Addr().(*net.TCPAddr).Port

	cfg := testConfig(t)
	cfg.Port = port
	s, err := Start(cfg)
	if err == nil {
		s.Shutdown()
		t.Fatalf("Start on busy port %d succeeded", port)
	}
	addr := net.JoinHostPort(DefaultHost, strconv.Itoa(port))
	if msg := err.Error(); !strings.Contains(msg, addr) || !strings.Contains(msg, "address already in use") {
		t.Errorf("error %q does not name %s and \"address already in use\"", msg, addr)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %q does not wrap EADDRINUSE", err)
	}
}

// TestListenFailureAfterCheck covers the case where the port is taken
// between the check and the server's own listen: the server only logs it.
func TestListenFailureAfterCheck(t *testing.T) {
	t.Parallel()
	addr := "127.0.0.1:4222"
	logs := &logAdapter{}
	logs.Fatalf("Error listening on port: %s, %q", addr,
		&net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)})

	err := startError(addr, logs.fatalErr())
	want := "embedded: listen on 127.0.0.1:4222: bind: address already in use"
	if err == nil || err.Error() != want {
		t.Errorf("startError = %v, want %q", err, want)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %q does not wrap EADDRINUSE", err)
	}

	logs = &logAdapter{}
	logs.Fatalf("Can't start JetStream: %v", os.ErrPermission)
	err = startError(addr, logs.fatalErr())
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "Can't start JetStream") {
		t.Errorf("startError = %v, want the JetStream failure wrapping ErrPermission", err)
	}
}

func TestUnusableDataDir(t *testing.T) {
	t.Parallel()
	// Tests may run as root, for whom permission bits do not matter; a
	// regular file in the way stops everyone.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir string
	}{
		{"parent is a file", filepath.Join(file, "sub")},
		{"dir is a file", file},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Start(Config{Port: RandomPort, DataDir: tt.dir})
			if err == nil {
				s.Shutdown()
				t.Fatalf("Start with DataDir %s succeeded", tt.dir)
			}
			if !strings.Contains(err.Error(), tt.dir) {
				t.Errorf("error %q does not name %s", err, tt.dir)
			}
			if !errors.Is(err, syscall.ENOTDIR) && !errors.Is(err, os.ErrExist) {
				t.Errorf("error %q does not wrap the underlying error", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"zero values with DataDir", Config{DataDir: "d"}, nil},
		{"all set", Config{Name: "n", Host: "0.0.0.0", Port: 65535, DataDir: "d", ReadyTimeout: time.Second}, nil},
		{"random port", Config{Port: -1, DataDir: "d"}, nil},
		{"empty DataDir", Config{}, []string{"embedded: Config.DataDir: must not be empty"}},
		{"port below -1", Config{Port: -2, DataDir: "d"}, []string{"Config.Port:", "-2"}},
		{"port above 65535", Config{Port: 65536, DataDir: "d"}, []string{"Config.Port:", "65536"}},
		{"negative ReadyTimeout", Config{ReadyTimeout: -time.Second, DataDir: "d"}, []string{"Config.ReadyTimeout:", "-1s"}},
		{"space in Name", Config{Name: "lease agent", DataDir: "d"}, []string{"Config.Name:", `"lease agent"`}},
		{"largest MaxPayload", Config{MaxPayload: 64 << 20, DataDir: "d"}, nil},
		{"negative MaxPayload", Config{MaxPayload: -1, DataDir: "d"}, []string{"Config.MaxPayload:", "-1"}},
		{"MaxPayload above 64 MiB", Config{MaxPayload: 64<<20 + 1, DataDir: "d"}, []string{"Config.MaxPayload:", "67108865"}},
		{"several bad fields", Config{Port: -5, ReadyTimeout: -1}, []string{"Config.Port:", "Config.DataDir:", "Config.ReadyTimeout:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkValidate(t, tt.cfg, tt.want)
		})
	}
}

// checkValidate checks that cfg.Validate names every part of want (or,
// with want empty, accepts cfg), and that Start refuses cfg with the same
// error before touching anything.
func checkValidate(t *testing.T, cfg Config, want []string) {
	t.Helper()
	err := cfg.Validate()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("Validate() = %v, want nil", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Validate() = nil, want error containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Validate() = %q, want it to contain %q", err, w)
		}
	}
	if s, serr := Start(cfg); serr == nil || serr.Error() != err.Error() {
		s.Shutdown()
		t.Errorf("Start() error = %v, want %v", serr, err)
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	got := Config{DataDir: "d"}.withDefaults()
	want := Config{Name: "leaseagent", Host: "127.0.0.1", Port: 4222, DataDir: "d", ReadyTimeout: 10 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("withDefaults() = %+v, want %+v", got, want)
	}
	// Explicit values, including RandomPort, are kept.
	in := Config{Name: "n", Host: "::1", Port: RandomPort, DataDir: "d", ReadyTimeout: time.Second}
	if got := in.withDefaults(); !reflect.DeepEqual(got, in) {
		t.Errorf("withDefaults() = %+v, want %+v", got, in)
	}
}

func TestShutdownIsIdempotent(t *testing.T) {
	t.Parallel()
	s := startServer(t, testConfig(t))
	dialInProcess(t, s) // a live client must not hold Shutdown up

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(s.Shutdown)
	}
	wg.Wait()
	s.Shutdown()

	if s.NATSServer().Running() {
		t.Error("server still running after Shutdown")
	}
	if _, err := s.Connect(nats.NoReconnect()); err == nil {
		t.Error("Connect after Shutdown succeeded")
	}
	var nilServer *Server
	nilServer.Shutdown()
}

// syncBuffer is an io.Writer safe for the server's concurrent log calls.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestLogger(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	cfg := testConfig(t)
	cfg.Name = "logged"
	cfg.Logger = slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s := startServer(t, cfg)
	s.Shutdown()

	logs := out.String()
	for _, want := range []string{"level=INFO", "Server is ready", "logged", "Server Exiting"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log does not contain %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "level=DEBUG") {
		t.Errorf("debug lines logged at Info level:\n%s", logs)
	}
}

// TestStartStopDoesNotLeak starts and stops the server repeatedly and
// checks that goroutines and data directories do not pile up. It does not
// run in parallel so that the goroutine count is its own.
func TestStartStopDoesNotLeak(t *testing.T) {
	const cycles = 20
	cycle := func(t *testing.T) {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "data")
		s, err := Start(Config{Port: RandomPort, DataDir: dir})
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		nc, err := s.Connect()
		if err != nil {
			s.Shutdown()
			t.Fatalf("Connect: %v", err)
		}
		nc.Close()
		s.Shutdown()
		if err := os.RemoveAll(dir); err != nil {
			t.Fatalf("remove data dir after Shutdown: %v", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("data dir %s still there: %v", dir, err)
		}
	}

	// One cycle first, so that one-time process-wide goroutines (started
	// lazily by the runtime or libraries) are part of the baseline.
	cycle(t)
	before := settledGoroutines(0)

	for range cycles {
		cycle(t)
	}
	if after := settledGoroutines(before); after > before {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Errorf("goroutines: %d before %d start/stop cycles, %d after\n%s", before, cycles, after, buf[:n])
	}
}

// settledGoroutines polls runtime.NumGoroutine until it is at most target
// or a deadline passes, and returns the last count. With target 0 it waits
// for the count to stop falling. Goroutines of closed connections exit
// asynchronously, hence the polling.
func settledGoroutines(target int) int {
	deadline := time.Now().Add(5 * time.Second)
	n := runtime.NumGoroutine()
	for stable := 0; time.Now().Before(deadline); {
		runtime.Gosched()
		m := runtime.NumGoroutine()
		if target > 0 && m <= target {
			return m
		}
		if target == 0 {
			if m >= n {
				stable++
			} else {
				stable = 0
			}
			if stable >= 100 {
				return m
			}
		}
		n = m
		<-time.After(time.Millisecond)
	}
	return n
}
