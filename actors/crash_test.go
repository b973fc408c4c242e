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
	crashAcknowledged = 3000 // claims acknowledged before the kill
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
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
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	if os.Getenv(crashNoSyncEnv) != "" {
		cmd.Env = append(cmd.Env, crashNoSyncEnv+"=1")
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
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
	if err := c.RefreshContext(ctx); err != nil {
		t.Fatal(err)
	}
	held := c.Leases()
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
