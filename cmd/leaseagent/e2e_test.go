package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
)

// buildFlags are passed to go build; race_test.go adds -race when the tests
// run with it, so that the daemon runs under the race detector too.
var buildFlags []string

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// leaseagentBinary builds the command once per test run and returns its
// path.
func leaseagentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		if binDir, buildErr = os.MkdirTemp("", "leaseagent-e2e-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "leaseagent")
		args := append(append([]string{"build"}, buildFlags...), "-o", binPath, ".")
		out, err := exec.Command(goTool, args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// baseEnv is the test's environment without LEASEAGENT_ variables. A
// binary built with -race would sleep a second before exiting 0; GORACE
// turns that off.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) && !strings.HasPrefix(kv, "GORACE=") {
			env = append(env, kv)
		}
	}
	return append(env, "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
}

// proc is a leaseagent process started by a test.
type proc struct {
	cmd    *exec.Cmd
	stdout <-chan string // lines
	stderr <-chan string // lines
	logs   *syncBuffer   // all of stderr
	done   chan struct{} // closed when the process has exited and its output is read
	err    error         // from Wait, once done is closed
}

// start starts leaseagent with args and the environment's LEASEAGENT_NATS_URL
// set to natsURL (unless empty). The process is killed, if still running,
// when the test ends; its stderr is logged if the test failed.
func start(t *testing.T, natsURL string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(leaseagentBinary(t), args...), logs: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = baseEnv()
	if natsURL != "" {
		p.cmd.Env = append(p.cmd.Env, "LEASEAGENT_NATS_URL="+natsURL)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = outW, errW
	err = p.cmd.Start()
	_ = outW.Close()
	_ = errW.Close()
	if err != nil {
		_ = outR.Close()
		_ = errR.Close()
		t.Fatal(err)
	}
	var stdoutEnded, stderrEnded <-chan struct{}
	p.stdout, stdoutEnded = scanLinesToEnd(outR, nil)
	p.stderr, stderrEnded = scanLinesToEnd(errR, p.logs)
	go func() {
		p.err = p.cmd.Wait()
		// The process has exited, but its last lines may still be in
		// the pipes: done means that they have been read too.
		<-stdoutEnded
		<-stderrEnded
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		_ = outR.Close()
		_ = errR.Close()
		if t.Failed() {
			t.Logf("stderr of leaseagent %s:\n%s", strings.Join(args, " "), p.logs.String())
		}
	})
	return p
}

// stop sends sig and waits for the process to exit; it returns the exit code.
func (p *proc) stop(t *testing.T, sig os.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
	return p.exitCode(t)
}

// exitCode waits for the process to exit and returns its exit code.
func (p *proc) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(waitLimit):
		t.Fatalf("leaseagent %s did not exit within %v", strings.Join(p.cmd.Args[1:], " "), waitLimit)
	}
	var exitErr *exec.ExitError
	if errors.As(p.err, &exitErr) {
		return exitErr.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("leaseagent: %v", p.err)
	}
	return 0
}

// daemon is a running `leaseagent` serving an embedded NATS server.
type daemon struct {
	*proc
	url string
}

// startDaemon starts `leaseagent --listen 127.0.0.1:<free port> --data-dir
// dataDir` and waits until it prints that it listens. A port that someone
// else took in the meantime is retried.
func startDaemon(t *testing.T, dataDir string) *daemon {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		p := start(t, "", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", dataDir)
		url := fmt.Sprintf("nats://127.0.0.1:%d", port)
		select {
		case line, ok := <-p.stdout:
			if ok {
				if want := fmt.Sprintf("leaseagent listening on %s (embedded, data in %s)", url, dataDir); line != want {
					t.Fatalf("ready line %q, want %q", line, want)
				}
				return &daemon{proc: p, url: url}
			}
			code := p.exitCode(t)
			if attempt < 3 && strings.Contains(p.logs.String(), "address already in use") {
				continue
			}
			t.Fatalf("leaseagent exited with code %d before it was ready:\n%s", code, p.logs.String())
		case <-time.After(waitLimit):
			t.Fatalf("leaseagent not ready within %v", waitLimit)
		}
	}
}

// cli runs a leaseagent operator command against natsURL and returns its
// output and exit code.
func cli(t *testing.T, natsURL string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, leaseagentBinary(t), args...)
	cmd.Env = baseEnv()
	if natsURL != "" {
		cmd.Env = append(cmd.Env, "LEASEAGENT_NATS_URL="+natsURL)
	}
	stdout, stderr, code = runCommandOutput(t, cmd, "leaseagent "+strings.Join(args, " "))
	if ctx.Err() != nil {
		t.Fatalf("leaseagent %s did not finish within %v", strings.Join(args, " "), waitLimit)
	}
	return stdout, stderr, code
}

// runCommandOutput runs cmd, named what in failures, and returns its
// output and exit code.
func runCommandOutput(t *testing.T, cmd *exec.Cmd, what string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		t.Fatalf("%s: %v", what, err)
	}
	return out.String(), errOut.String(), code
}

// mustCLI runs an operator command and fails the test unless it exits with
// want.
func mustCLI(t *testing.T, natsURL string, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, code := cli(t, natsURL, args...)
	if code != want {
		t.Fatalf("leaseagent %s: exit code %d, want %d; stdout %q, stderr %q", strings.Join(args, " "), code, want, stdout, stderr)
	}
	if want != 0 {
		checkErrorLine(t, stderr, "")
	}
	return stdout, stderr
}

// token runs `leaseagent check` and returns the fencing token it prints.
func token(t *testing.T, natsURL, ns, leaseName, holder string) uint64 {
	t.Helper()
	out, _ := mustCLI(t, natsURL, 0, "check", ns, leaseName, holder)
	tok, err := strconv.ParseUint(strings.TrimSuffix(out, "\n"), 10, 64)
	if err != nil || tok == 0 {
		t.Fatalf("check %s/%s %s printed %q, want a fencing token", ns, leaseName, holder, out)
	}
	return tok
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestEndToEnd(t *testing.T) {
	dataDir := t.TempDir()
	d := startDaemon(t, dataDir)
	const ns = "e2e"

	// A watcher started before anything happens; --log-level debug makes
	// it say on stderr when it has subscribed.
	w := start(t, d.url, "watch", ns, "--log-level", "debug")
	lineContaining(t, w.stderr, "msg=watching")
	wAll := start(t, d.url, "watch", "--log-level", "debug")
	lineContaining(t, wAll.stderr, "msg=watching")

	// A plain NATS subscriber to every expiry.
	nc := connect(t, d.url)
	expired := make(chan *nats.Msg, 64)
	if _, err := nc.ChanSubscribe("lease.expired.>", expired); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Claims through the CLI: success, denial, extension.
	mustCLI(t, d.url, 0, "claim", ns, "db", "primary-0", "1m")
	_, stderr := mustCLI(t, d.url, exitNotHeld, "claim", ns, "db", "other", "1m")
	if !strings.Contains(stderr, "denied") {
		t.Errorf("denied claim: stderr %q does not say denied", stderr)
	}
	mustCLI(t, d.url, 0, "claim", ns, "db", "primary-0", "2m")
	mustCLI(t, d.url, 0, "claim", ns, "mysql/0", "unit-1", "1m")
	mustCLI(t, d.url, 0, "claim", ns, "gone", "g", "1m")

	dbToken := token(t, d.url, ns, "db", "primary-0")
	mysqlToken := token(t, d.url, ns, "mysql/0", "unit-1")
	goneToken := token(t, d.url, ns, "gone", "g")
	if out, _ := mustCLI(t, d.url, exitNotHeld, "check", ns, "db", "other"); out != "" {
		t.Errorf("check of a holder that does not hold: stdout %q, want nothing", out)
	}

	// The client package sees the same tokens and can claim too.
	cl, err := client.New(connect(t, d.url))
	if err != nil {
		t.Fatal(err)
	}
	cns := cl.Namespace(ns)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	var fence natskv.Fence
	if err := cns.Token("db", "primary-0").(*client.Token).CheckContext(ctx, &fence); err != nil {
		t.Fatalf("client check: %v", err)
	}
	if fence.Revision != dbToken || fence.Bucket != "leases" {
		t.Errorf("client fence %+v, want revision %d in bucket leases", fence, dbToken)
	}
	if err := cns.ClaimContext(ctx, "viaclient", "go", time.Minute); err != nil {
		t.Fatalf("client claim: %v", err)
	}
	clientToken := token(t, d.url, ns, "viaclient", "go")

	// leases: an aligned table sorted by lease.
	out, _ := mustCLI(t, d.url, 0, "leases", ns)
	rows := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(rows) != 5 || !regexp.MustCompile(`^LEASE +HOLDER +EXPIRES-IN +REVISION$`).MatchString(rows[0]) {
		t.Fatalf("leases printed:\n%s", out)
	}
	for i, want := range []struct {
		lease, holder string
		token         uint64
	}{{"db", "primary-0", dbToken}, {"gone", "g", goneToken}, {"mysql/0", "unit-1", mysqlToken}, {"viaclient", "go", clientToken}} {
		f := strings.Fields(rows[i+1])
		if len(f) != 4 || f[0] != want.lease || f[1] != want.holder || f[3] != strconv.FormatUint(want.token, 10) {
			t.Errorf("leases row %d = %q, want %s %s ... %d", i+1, rows[i+1], want.lease, want.holder, want.token)
		}
		for _, col := range []string{"HOLDER", "EXPIRES-IN", "REVISION"} {
			at := strings.Index(rows[0], col)
			if row := rows[i+1]; len(row) <= at || row[at-1] != ' ' || row[at] == ' ' {
				t.Errorf("leases column %s not aligned:\n%s", col, out)
			}
		}
	}

	// release: the holder can, twice cannot, another holder cannot.
	mustCLI(t, d.url, exitNotHeld, "release", ns, "gone", "someone-else")
	mustCLI(t, d.url, 0, "release", ns, "gone", "g")
	mustCLI(t, d.url, exitNotHeld, "release", ns, "gone", "g")
	mustCLI(t, d.url, exitNotHeld, "check", ns, "gone", "g")
	select {
	case m := <-expired:
		var ev messages.ExpiredEvent
		if err := proto.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("expired event on %s: %v", m.Subject, err)
		}
		if m.Subject != "lease.expired.e2e.gone" || ev.GetNamespace() != ns || ev.GetLease() != "gone" || ev.GetHolder() != "g" || ev.GetRevision() != goneToken {
			t.Errorf("expired event on %s: %v; want e2e/gone held by g at revision %d", m.Subject, &ev, goneToken)
		}
	case <-time.After(waitLimit):
		t.Fatalf("no expired event within %v", waitLimit)
	}

	// watch printed the claims (not the extension) and the release.
	wantLines := map[string]bool{
		fmt.Sprintf("claimed e2e/db holder=primary-0 revision=%d duration=1m0s", dbToken):      false,
		fmt.Sprintf("claimed e2e/mysql/0 holder=unit-1 revision=%d duration=1m0s", mysqlToken): false,
		fmt.Sprintf("claimed e2e/gone holder=g revision=%d duration=1m0s", goneToken):          false,
		fmt.Sprintf("claimed e2e/viaclient holder=go revision=%d duration=1m0s", clientToken):  false,
		fmt.Sprintf("expired e2e/gone holder=g revision=%d", goneToken):                        false,
	}
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (.*)$`)
	for seen := 0; seen < len(wantLines); {
		line := nextLine(t, w.stdout, "watch")
		m := stamp.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("watch printed %q, want a time stamp first", line)
		}
		done, ok := wantLines[m[1]]
		if !ok || done {
			t.Fatalf("watch printed %q, unexpected or twice", line)
		}
		wantLines[m[1]] = true
		seen++
	}

	// Without NS, watch sees every namespace.
	lineContaining(t, wAll.stdout, fmt.Sprintf(" expired e2e/gone holder=g revision=%d", goneToken))
	if code := wAll.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("watch: exit code %d after SIGINT, want 0", code)
	}

	// wait: bounded by --timeout while the lease is held, and returns once
	// it is released.
	mustCLI(t, d.url, 0, "claim", ns, "w", "h", "1m")
	_, stderr = mustCLI(t, d.url, exitNotHeld, "wait", "--timeout", "200ms", ns, "w")
	if !strings.Contains(stderr, "still held") {
		t.Errorf("wait --timeout: stderr %q does not say still held", stderr)
	}
	waiter := start(t, d.url, "wait", ns, "w")
	mustCLI(t, d.url, 0, "release", ns, "w", "h")
	if code := waiter.exitCode(t); code != 0 {
		t.Errorf("wait: exit code %d, want 0", code)
	}
	mustCLI(t, d.url, 0, "wait", ns, "never-held")

	// watch and the daemon stop cleanly on SIGTERM.
	if code := w.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("watch: exit code %d after SIGTERM, want 0", code)
	}
	if code := d.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("daemon: exit code %d after SIGTERM, want 0", code)
	}
	if !strings.Contains(d.logs.String(), "msg=stopped") {
		t.Errorf("daemon did not log that it stopped:\n%s", d.logs.String())
	}
	if _, _, code := cli(t, d.url, "leases", ns, "--timeout", "2s"); code != exitUnavailable {
		t.Errorf("leases with the daemon stopped: exit code %d, want %d", code, exitUnavailable)
	}

	// Restarted on the same data, the leases are held by the same holders
	// with the same fencing tokens.
	d2 := startDaemon(t, dataDir)
	for _, l := range []struct {
		lease, holder string
		token         uint64
	}{{"db", "primary-0", dbToken}, {"mysql/0", "unit-1", mysqlToken}, {"viaclient", "go", clientToken}} {
		if got := token(t, d2.url, ns, l.lease, l.holder); got != l.token {
			t.Errorf("after restart, %s held by %s with token %d, want %d", l.lease, l.holder, got, l.token)
		}
	}
	cl2, err := client.New(connect(t, d2.url))
	if err != nil {
		t.Fatal(err)
	}
	fence = natskv.Fence{}
	if err := cl2.Namespace(ns).Token("viaclient", "go").(*client.Token).CheckContext(ctx, &fence); err != nil || fence.Revision != clientToken {
		t.Errorf("after restart, client check: fence %+v, %v; want revision %d", fence, err, clientToken)
	}
	mustCLI(t, d2.url, exitNotHeld, "claim", ns, "db", "other", "1m")
	mustCLI(t, d2.url, exitNotHeld, "check", ns, "gone", "g")
	if code := d2.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("restarted daemon: exit code %d after SIGINT, want 0", code)
	}
}

func TestCLIUnavailable(t *testing.T) {
	url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	_, stderr := mustCLI(t, url, exitUnavailable, "claim", "ns", "l", "h", "10s")
	checkErrorLine(t, stderr, "no servers available")
	mustCLI(t, "", exitUnavailable, "check", "--nats-url", url, "ns", "l", "h")
}

// silentServer returns the URL of a TCP listener that accepts connections
// and never says anything: a NATS server that is hung, or a port that a
// firewall lets through to nothing that speaks NATS.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "nats://" + l.Addr().String()
}

// A NATS server that does not answer within --timeout is unavailable
// (exit 3), like one that refuses the connection.
func TestCLIUnavailableWhenTheServerIsSilent(t *testing.T) {
	url := silentServer(t)
	for _, args := range [][]string{
		{"claim", "ns", "l", "h", "10s"},
		{"check", "ns", "l", "h"},
		{"status"},
		{"serve"},
	} {
		t.Run(args[0], func(t *testing.T) {
			_, stderr, code := cli(t, "", append(args, "--nats-url", url, "--timeout", "500ms")...)
			if code != exitUnavailable {
				t.Errorf("leaseagent %s against a silent server: exit %d, stderr %q; want %d", strings.Join(args, " "), code, stderr, exitUnavailable)
			}
			checkErrorLine(t, stderr, "timeout")
		})
	}
}

func TestCLIUsage(t *testing.T) {
	for _, args := range [][]string{
		{"claim", "ns", "l"},
		{"claim", "ns", "l", "h", "ten-seconds"},
		{"release", "ns", "l", "h", "x"},
		{"leases", "--no-such-flag", "ns"},
		{"frobnicate"},
		{"check", "--nats-url", "nats://u:secret@bad host:4222", "ns", "l", "h"},
		{"status", "--nats-url", "nats://[::1"},
		{"serve", "--nats-url", "nats://bad host:4222"},
		{"leases", "--nats-url=bogus://u:secret@x", "ns"},
		{"serve", "--nats-url", "nats-route://127.0.0.1:6222"},
		{"check", "--nats-url", "nats://127.0.0.1:4222,ws://127.0.0.1:8080", "ns", "l", "h"},
	} {
		_, stderr := mustCLI(t, "", exitUsage, args...)
		checkErrorLine(t, stderr, "see 'leaseagent")
		if strings.Contains(stderr, "secret") {
			t.Errorf("leaseagent %s: stderr %q shows the password", strings.Join(args, " "), stderr)
		}
	}
}
