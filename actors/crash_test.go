package actors

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/natskv"
)

// A test binary started with crashDirEnv set is not a test run but the
// process TestAcknowledgedClaimsSurviveKill kills: an embedded server with
// SyncAlways on the data directory named, and a Manager whose goroutines
// claim distinct leases and print each claim acknowledged, as
// "<lease> <holder>" lines, and each atomic batch sent as a "# batch" line,
// until the process is killed.
const (
	crashDirEnv       = "LEASEAGENT_TEST_CRASH_DIR"
	crashNoSyncEnv    = "LEASEAGENT_TEST_CRASH_NOSYNC" // only to see the test fail
	crashNamespace    = "crash"
	crashGoroutines   = 32
	crashAcknowledged = 3000                         // claims acknowledged before the kill
	crashModeEnv      = "LEASEAGENT_TEST_CRASH_MODE" // runWriter's mode
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		if mode := os.Getenv(crashModeEnv); mode != "" {
			os.Exit(runWriter(dir, mode))
		}
		os.Exit(runClaimer(dir, os.Getenv(crashNoSyncEnv) != ""))
	}
	os.Exit(m.Run())
}

func runClaimer(dir string, noSync bool) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: dir, NoSync: noSync})
	if err != nil {
		return fail(err)
	}
	nc, err := srv.Connect()
	if err != nil {
		return fail(err)
	}
	cfg := Config{Conn: nc, Logger: slog.New(slog.DiscardHandler), MinBatch: DefaultMinBatch, hooks: &hooks{}}
	cfg.hooks.round = func(_ string, _ int, stats natskv.BatchStats) {
		for range stats.Batches {
			_, _ = os.Stdout.WriteString("# batch\n")
		}
	}
	m, err := New(context.Background(), cfg)
	if err != nil {
		return fail(err)
	}
	n := m.Namespace(crashNamespace)
	errs := make(chan error, crashGoroutines)
	for g := range crashGoroutines {
		go func() {
			holder := fmt.Sprintf("h%d", g)
			for i := 0; ; i++ {
				name := fmt.Sprintf("l%d-%d", g, i)
				if err := n.Claim(name, holder, time.Hour); err != nil {
					errs <- err
					return
				}
				// One write per line: whole lines, however the
				// goroutines interleave.
				if _, err := os.Stdout.WriteString(name + " " + holder + "\n"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	return fail(<-errs)
}

// TestAcknowledgedClaimsSurviveKill kills (SIGKILL) a process that runs the
// embedded server with SyncAlways and a Manager while its goroutines claim
// leases, restarts the server on the same data directory, and finds every
// claim the process acknowledged held by its holder (invariant 9), group
// commit or not.
func TestAcknowledgedClaimsSurviveKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	env := []string{crashDirEnv + "=" + dir}
	if os.Getenv(crashNoSyncEnv) != "" {
		env = append(env, crashNoSyncEnv+"=1")
	}
	cmd, out, stderr, kill := startChild(t, env...)

	// Read every line the process wrote, kill it once enough claims are
	// acknowledged, and keep reading what it wrote before it died.
	acked := make(map[string]string)
	batches := 0
	deadline := time.AfterFunc(time.Minute, kill)
	defer deadline.Stop()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if sc.Text() == "# batch" {
			batches++
			continue
		}
		name, holder, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			t.Fatalf("child wrote %q", sc.Text())
		}
		acked[name] = holder
		if len(acked) == crashAcknowledged {
			kill()
		}
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(acked) < crashAcknowledged {
		t.Fatalf("child died after %d claims, before it was killed: %s", len(acked), stderr.String())
	}
	if batches == 0 {
		t.Fatal("the child sent no atomic batch: group commit was not tested")
	}

	held, _ := reopen(t, dir)
	lost := 0
	for name, holder := range acked {
		if held[name].Holder != holder {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged claim of %s by %s: held by %q after the restart", name, holder, held[name].Holder)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged claims lost", lost, len(acked))
	}
	t.Logf("%d acknowledged claims (%d batches sent) survived; %d leases held", len(acked), batches, len(held))
}

// Durations of the writes runWriter makes: an extension from
// crashShortDuration to crashLongDuration is longer than the recorded
// duration, so it is written.
const (
	crashShortDuration = 2 * time.Minute
	crashLongDuration  = time.Hour
	crashWrites        = 600 // acknowledged operations before the kill
)

// runWriter is the child of TestAcknowledgedWritesSurviveKill: goroutines
// that each, on fresh leases, do what mode says and, once it is
// acknowledged, print "<lease> <holder> <fencing token>":
//
//   - "claim": claim for crashLongDuration;
//   - "extend": claim for crashShortDuration, then extend to
//     crashLongDuration;
//   - "release": claim, then release (the token printed is the claim's).
func runWriter(dir, mode string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: dir})
	if err != nil {
		return fail(err)
	}
	nc, err := srv.Connect()
	if err != nil {
		return fail(err)
	}
	m, err := New(context.Background(), Config{Conn: nc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fail(err)
	}
	n := m.Namespace(crashNamespace)
	write := func(name, holder string) (uint64, error) {
		first := crashLongDuration
		if mode == "extend" {
			first = crashShortDuration
		}
		if err := n.Claim(name, holder, first); err != nil {
			return 0, err
		}
		var fence natskv.Fence
		if err := n.Token(name, holder).Check(&fence); err != nil {
			return 0, err
		}
		switch mode {
		case "claim":
		case "extend":
			err = n.Claim(name, holder, crashLongDuration)
		case "release":
			err = n.Release(context.Background(), name, holder)
		default:
			err = fmt.Errorf("unknown mode %q", mode)
		}
		return fence.Revision, err
	}
	errs := make(chan error, crashGoroutines)
	for g := range crashGoroutines {
		go func() {
			holder := fmt.Sprintf("h%d", g)
			for i := 0; ; i++ {
				name := fmt.Sprintf("l%d-%d", g, i)
				rev, err := write(name, holder)
				if err == nil {
					_, err = fmt.Fprintf(os.Stdout, "%s %s %d\n", name, holder, rev)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	return fail(<-errs)
}

// ackedWrite is an operation runWriter acknowledged.
type ackedWrite struct {
	holder string
	token  uint64
}

// TestAcknowledgedWritesSurviveKill kills (SIGKILL) a process that runs the
// embedded server and a Manager while it claims, extends or releases leases,
// restarts the server on the same data directory, and checks that every
// acknowledged write is there: a claim with its fencing token, an extension
// with its longer duration (and its token), a release as a free lease.
func TestAcknowledgedWritesSurviveKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	tests := []struct {
		mode  string
		check func(t *testing.T, name string, w ackedWrite, info lease.Info, held bool, loaded time.Time) bool
	}{
		{"claim", func(t *testing.T, name string, w ackedWrite, info lease.Info, held bool, _ time.Time) bool {
			return checkHeld(t, name, w, info, held)
		}},
		{"extend", func(t *testing.T, name string, w ackedWrite, info lease.Info, held bool, loaded time.Time) bool {
			if !checkHeld(t, name, w, info, held) {
				return false
			}
			// Loaded leases get their recorded duration from the load:
			// the extension's hour, not the claim's two minutes.
			if left := info.Expiry.Sub(loaded); left < crashLongDuration-time.Minute {
				t.Errorf("acknowledged extension of %s to %s: expires %s after the restart", name, crashLongDuration, left)
				return false
			}
			return true
		}},
		{"release", func(t *testing.T, name string, w ackedWrite, info lease.Info, held bool, _ time.Time) bool {
			if held {
				t.Errorf("acknowledged release of %s by %s: held by %q after the restart", name, w.holder, info.Holder)
				return false
			}
			return true
		}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			dir := t.TempDir()
			acked := killWriter(t, dir, tt.mode)

			held, loaded := reopen(t, dir)
			lost := 0
			for name, w := range acked {
				info, ok := held[name]
				if !tt.check(t, name, w, info, ok, loaded) {
					if lost++; lost >= 5 {
						break
					}
				}
			}
			if lost > 0 {
				t.Fatalf("acknowledged %s writes lost (%d shown, checking stopped at 5; %d acknowledged)", tt.mode, lost, len(acked))
			}
		})
	}
}

// reopen starts a server on the data dir a killed child left, and returns
// the leases of crashNamespace as a fresh natskv.Client reads them, and
// when the read began.
func reopen(t *testing.T, dir string) (map[string]lease.Info, time.Time) {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	bucket, err := natskv.BindBucket(ctx, natskv.BucketConfig{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	c, err := natskv.NewClient(natskv.Config{Bucket: bucket, Namespace: crashNamespace})
	if err != nil {
		t.Fatal(err)
	}
	loaded := time.Now()
	if err := c.RefreshContext(ctx); err != nil {
		t.Fatal(err)
	}
	return c.Leases(), loaded
}

// checkHeld reports whether info says the lease is held by w's holder with
// w's fencing token, and fails the test if not.
func checkHeld(t *testing.T, name string, w ackedWrite, info lease.Info, held bool) bool {
	t.Helper()
	if !held || info.Holder != w.holder {
		t.Errorf("acknowledged claim of %s by %s: held by %q after the restart", name, w.holder, info.Holder)
		return false
	}
	var fence natskv.Fence
	if err := info.Trapdoor(&fence); err != nil {
		t.Errorf("fencing token of %s: %v", name, err)
		return false
	}
	if fence.Revision != w.token {
		t.Errorf("acknowledged claim of %s by %s with token %d: token %d after the restart", name, w.holder, w.token, fence.Revision)
		return false
	}
	return true
}

// startChild runs this test binary again as a child process, with env
// added to its environment and no test of its own to run (TestMain sees
// the variables). It returns the process, its stdout, what it writes to
// stderr, and a kill that sends SIGKILL once (also when the test ends).
func startChild(t *testing.T, env ...string) (*exec.Cmd, io.Reader, *strings.Builder, func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var killOnce sync.Once
	kill := func() { killOnce.Do(func() { _ = cmd.Process.Kill() }) }
	t.Cleanup(kill)
	return cmd, out, stderr, kill
}

// killWriter runs runWriter in mode on dir, kills it with SIGKILL once it
// has acknowledged crashWrites operations, and returns every operation it
// acknowledged, by lease.
func killWriter(t *testing.T, dir, mode string) map[string]ackedWrite {
	t.Helper()
	cmd, out, stderr, kill := startChild(t, crashDirEnv+"="+dir, crashModeEnv+"="+mode)
	deadline := time.AfterFunc(time.Minute, kill)
	t.Cleanup(func() { deadline.Stop() })

	acked := make(map[string]ackedWrite)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var name string
		var w ackedWrite
		if _, err := fmt.Sscanf(sc.Text(), "%s %s %d", &name, &w.holder, &w.token); err != nil {
			t.Fatalf("child wrote %q: %v", sc.Text(), err)
		}
		acked[name] = w
		if len(acked) == crashWrites {
			kill()
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(acked) < crashWrites {
		t.Fatalf("child died after %d operations, before it was killed: %s", len(acked), stderr.String())
	}
	return acked
}
