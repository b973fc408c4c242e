package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/protocol"
)

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"denied", fmt.Errorf("claim ns/l for h: %w", lease.ErrClaimDenied), 1},
		{"not held", fmt.Errorf("check: %w", lease.ErrNotHeld), 1},
		{"usage", &usageError{command: "leaseagent claim", err: errors.New("bad")}, 2},
		{"invalid argument", fmt.Errorf("claim: %w: bad name", protocol.ErrInvalidArgument), 2},
		{"unavailable", fmt.Errorf("claim: %w: gave up", protocol.ErrUnavailable), 3},
		{"no servers", fmt.Errorf("connect: %w", nats.ErrNoServers), 3},
		{"no responders", nats.ErrNoResponders, 3},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, 3},
		{"read timeout", fmt.Errorf("connect: %w", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}), 3},
		{"still held", fmt.Errorf("wait for ns/l: %w after 1s", errStillHeld), 1},
		{"not found", &commandNotRun{name: "x", code: 127, err: exec.ErrNotFound}, 127},
		{"cannot run", &commandNotRun{name: "x", code: 126, err: os.ErrPermission}, 126},
		{"SIGINT", fmt.Errorf("wait: %w", &signalled{sig: syscall.SIGINT}), 130},
		{"SIGTERM", fmt.Errorf("hold: %w", &signalled{sig: syscall.SIGTERM}), 143},
		{"internal", fmt.Errorf("claim: %w", protocol.ErrInternal), 4},
		{"deadline", fmt.Errorf("wait: %w", context.DeadlineExceeded), 4},
		{"other", errors.New("disk on fire"), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err); got != tc.want {
				t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{
		"nats-url":     "LEASEAGENT_NATS_URL",
		"data-dir":     "LEASEAGENT_DATA_DIR",
		"timeout":      "LEASEAGENT_TIMEOUT",
		"max-duration": "LEASEAGENT_MAX_DURATION",
	} {
		if got := envName(flag); got != want {
			t.Errorf("envName(%q) = %q, want %q", flag, got, want)
		}
	}
}

func TestBindEnv(t *testing.T) {
	newFlags := func() (*pflag.FlagSet, *string, *time.Duration, *int) {
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		url := fs.String("nats-url", "nats://default:4222", "")
		timeout := fs.Duration("timeout", 10*time.Second, "")
		replicas := fs.Int("replicas", 1, "")
		return fs, url, timeout, replicas
	}

	t.Run("env sets unset flags", func(t *testing.T) {
		fs, url, timeout, replicas := newFlags()
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		env := envMap(map[string]string{"LEASEAGENT_NATS_URL": "nats://env:4222", "LEASEAGENT_TIMEOUT": "3s"})
		if err := bindEnv(fs, env); err != nil {
			t.Fatal(err)
		}
		if *url != "nats://env:4222" || *timeout != 3*time.Second || *replicas != 1 {
			t.Errorf("got url %q timeout %v replicas %d; want the env's url and timeout, default replicas", *url, *timeout, *replicas)
		}
		if !fs.Changed("nats-url") || fs.Changed("replicas") {
			t.Errorf("Changed(nats-url) = %v, Changed(replicas) = %v; want true, false", fs.Changed("nats-url"), fs.Changed("replicas"))
		}
	})

	t.Run("command line wins", func(t *testing.T) {
		fs, url, timeout, _ := newFlags()
		if err := fs.Parse([]string{"--nats-url", "nats://flag:4222"}); err != nil {
			t.Fatal(err)
		}
		env := envMap(map[string]string{"LEASEAGENT_NATS_URL": "nats://env:4222", "LEASEAGENT_TIMEOUT": "3s"})
		if err := bindEnv(fs, env); err != nil {
			t.Fatal(err)
		}
		if *url != "nats://flag:4222" || *timeout != 3*time.Second {
			t.Errorf("got url %q timeout %v; want the flag's url and the env's timeout", *url, *timeout)
		}
	})

	t.Run("empty is unset", func(t *testing.T) {
		fs, url, _, _ := newFlags()
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		if err := bindEnv(fs, envMap(map[string]string{"LEASEAGENT_NATS_URL": ""})); err != nil {
			t.Fatal(err)
		}
		if *url != "nats://default:4222" || fs.Changed("nats-url") {
			t.Errorf("url = %q, changed %v; want the default, unchanged", *url, fs.Changed("nats-url"))
		}
	})

	t.Run("bad value names the variable", func(t *testing.T) {
		fs, _, _, _ := newFlags()
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		err := bindEnv(fs, envMap(map[string]string{"LEASEAGENT_REPLICAS": "three"}))
		if err == nil || !strings.Contains(err.Error(), "LEASEAGENT_REPLICAS") || !strings.Contains(err.Error(), `"three"`) {
			t.Errorf("bindEnv = %v, want an error naming LEASEAGENT_REPLICAS and its value", err)
		}
	})
}

// runCLI runs the command line in-process with the given environment.
func runCLI(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	var out, errOut bytes.Buffer
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	code = run(ctx, args, &out, &errOut, environ)
	return out.String(), errOut.String(), code
}

// checkErrorLine checks that stderr is one "leaseagent: " line containing
// want.
func checkErrorLine(t *testing.T, stderr, want string) {
	t.Helper()
	if !strings.HasPrefix(stderr, "leaseagent: ") || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("stderr = %q, want one line starting with \"leaseagent: \"", stderr)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr = %q, want it to contain %q", stderr, want)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"claim"}, "claim needs NS LEASE HOLDER DURATION, got 0 arguments"},
		{[]string{"claim", "ns", "l", "h"}, "got 3 arguments"},
		{[]string{"claim", "ns", "l", "h", "1m", "extra"}, "got 5 arguments"},
		{[]string{"claim", "ns", "l", "h", "soon"}, `bad DURATION "soon"`},
		{[]string{"claim", "--", "ns", "l", "h", "-1s"}, "DURATION must be positive"},
		{[]string{"claim", "ns", "l", "h", "0s"}, "DURATION must be positive"},
		{[]string{"claim", "ns", "l", "h", "-5s"}, "DURATION must be positive, not -5s"},
		{[]string{"hold", "ns", "l", "h", "-5s", "--", "true"}, "DURATION must be positive, not -5s"},
		{[]string{"release", "ns", "l"}, "release needs NS LEASE HOLDER, got 2 arguments"},
		{[]string{"check", "ns", "l", "h", "x"}, "check needs NS LEASE HOLDER, got 4 arguments"},
		{[]string{"leases"}, "leases needs NS, got 0 arguments"},
		{[]string{"wait", "ns"}, "wait needs NS LEASE, got 1 argument"},
		{[]string{"watch", "a", "b"}, "watch takes [NS], got 2 arguments"},
		{[]string{"watch", "bad ns"}, "invalid namespace name"},
		{[]string{"version", "x"}, "version needs no arguments"},
		{[]string{"serve", "x"}, "serve needs no arguments"},
		{[]string{"clam", "ns"}, `unknown command "clam"; did you mean claim?`},
		{[]string{"claim", "--bogus", "ns", "l", "h", "1s"}, "unknown flag: --bogus"},
		{[]string{"--timeout", "soon", "leases", "ns"}, `invalid argument "soon" for "--timeout"`},
		{[]string{"leases", "--timeout", "0s", "ns"}, "--timeout must be positive"},
		{[]string{"--log-level", "loud"}, `unknown log level "loud"`},
		{[]string{"--listen", "localhost"}, "--listen"},
		{[]string{"serve", "--listen", "127.0.0.1:70000"}, `bad port "70000"`},
		{[]string{"--replicas", "0"}, "--replicas must be at least 1"},
		{[]string{"--max-duration", "0s"}, "--max-duration must be positive"},
		{[]string{"--nats-url", "nats://127.0.0.1:1", "--data-dir", "x"}, "cannot be used with --nats-url"},
		{[]string{"check", "--nats-url", "", "ns", "l", "h"}, "--nats-url must not be empty"},
		{[]string{"check", "--nats-url", " , ", "ns", "l", "h"}, "--nats-url must not be empty"},
		{[]string{"claim", "--tls-cert", "c.pem", "ns", "l", "h", "1s"}, "--tls-cert and --tls-key must be given together"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) { requireUsageError(t, tc.want, tc.args...) })
	}
}

// requireUsageError runs the CLI with args and requires a usage error: exit
// code exitUsage, nothing on stdout, and an error line containing want.
func requireUsageError(t *testing.T, want string, args ...string) {
	t.Helper()
	stdout, stderr, code := runCLI(t, nil, args...)
	if code != exitUsage {
		t.Errorf("exit code %d, want %d", code, exitUsage)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	checkErrorLine(t, stderr, want)
}

func TestEnvOnCommandLine(t *testing.T) {
	envPort, flagPort := freePort(t), freePort(t)
	envURL := fmt.Sprintf("nats://127.0.0.1:%d", envPort)
	flagURL := fmt.Sprintf("nats://127.0.0.1:%d", flagPort)
	env := map[string]string{"LEASEAGENT_NATS_URL": envURL}

	t.Run("env sets the URL", func(t *testing.T) {
		_, stderr, code := runCLI(t, env, "claim", "ns", "l", "h", "1s")
		if code != exitUnavailable {
			t.Errorf("exit code %d, want %d", code, exitUnavailable)
		}
		checkErrorLine(t, stderr, "connect to "+envURL+":")
	})
	t.Run("flag wins over env", func(t *testing.T) {
		_, stderr, code := runCLI(t, env, "claim", "--nats-url", flagURL, "ns", "l", "h", "1s")
		if code != exitUnavailable {
			t.Errorf("exit code %d, want %d", code, exitUnavailable)
		}
		checkErrorLine(t, stderr, "connect to "+flagURL+":")
	})
	t.Run("bad env value", func(t *testing.T) {
		_, stderr, code := runCLI(t, map[string]string{"LEASEAGENT_TIMEOUT": "soon"}, "leases", "ns")
		if code != exitUsage {
			t.Errorf("exit code %d, want %d", code, exitUsage)
		}
		checkErrorLine(t, stderr, "environment variable LEASEAGENT_TIMEOUT")
	})
	t.Run("bad env log level", func(t *testing.T) {
		_, stderr, code := runCLI(t, map[string]string{"LEASEAGENT_LOG_LEVEL": "loud"}, "version")
		if code != exitUsage {
			t.Errorf("exit code %d, want %d", code, exitUsage)
		}
		checkErrorLine(t, stderr, "environment variable LEASEAGENT_LOG_LEVEL")
	})
}

func TestVersionAndHelp(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		stdout, stderr, code := runCLI(t, nil, args...)
		if code != 0 || stdout != version+"\n" || stderr != "" {
			t.Errorf("%s: code %d stdout %q stderr %q; want 0, %q, nothing", args[0], code, stdout, stderr, version+"\n")
		}
	}
	// Not a setting: its variable does not turn the daemon into --version,
	// and the config file has no key for it.
	requireUsageError(t, `unknown key "version"`, "--config", writeFile(t, "leaseagent.toml", "version = true\n"), "version")
	stdout, stderr, code := runCLI(t, map[string]string{"LEASEAGENT_VERSION": "true"}, "leases", "--nats-url", "nats://127.0.0.1:1", "--timeout", "100ms", "ns")
	if code != exitUnavailable || stdout != "" {
		t.Errorf("leases with LEASEAGENT_VERSION=true: code %d stdout %q stderr %q; want it to run, and exit %d", code, stdout, stderr, exitUnavailable)
	}
	stdout, _, code = runCLI(t, nil, "--help")
	if code != 0 {
		t.Errorf("--help: exit code %d", code)
	}
	for _, want := range []string{"claim", "release", "check", "leases", "wait", "watch", "serve", "version", "--nats-url", "LEASEAGENT_"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("--help output lacks %q:\n%s", want, stdout)
		}
	}
	stdout, _, code = runCLI(t, nil, "claim", "--help")
	if code != 0 || !strings.Contains(stdout, "claim NS LEASE HOLDER DURATION") || !strings.Contains(stdout, "--timeout") {
		t.Errorf("claim --help: code %d, output:\n%s", code, stdout)
	}
}

func TestSplitListen(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port int
		bad  bool
	}{
		{in: "127.0.0.1:4222", host: "127.0.0.1", port: 4222},
		{in: "127.0.0.1:0", host: "127.0.0.1", port: embedded.RandomPort},
		{in: ":4222", host: "0.0.0.0", port: 4222},
		{in: "[::1]:5000", host: "::1", port: 5000},
		{in: "localhost", bad: true},
		{in: "127.0.0.1:x", bad: true},
		{in: "127.0.0.1:65536", bad: true},
	} {
		host, port, err := splitListen(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("splitListen(%q) = %q, %d; want an error", tc.in, host, port)
			}
			continue
		}
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("splitListen(%q) = %q, %d, %v; want %q, %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}

func TestWriteLeases(t *testing.T) {
	var buf bytes.Buffer
	err := writeLeases(&buf, []client.LeaseInfo{
		{Lease: "mysql/0", Holder: "unit-10", ExpiresIn: 59*time.Second + 949*time.Millisecond, Revision: 12},
		{Lease: "a", Holder: "h", ExpiresIn: 1234 * time.Millisecond, Revision: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"LEASE    HOLDER   EXPIRES-IN  REVISION\n" +
		"a        h        1.2s        3\n" +
		"mysql/0  unit-10  59.9s       12\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestFormatEvent(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("X", 3600))
	mustMarshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	claimed := mustMarshal(&messages.ClaimedEvent{Namespace: "ns", Lease: "mysql/0", Holder: "h", Revision: 12, Duration: durationpb.New(time.Minute)})
	expired := mustMarshal(&messages.ExpiredEvent{Namespace: "ns", Lease: "mysql/0", Holder: "h", Revision: 12})
	unnamed := mustMarshal(&messages.ExpiredEvent{Holder: "h", Revision: 7})
	for _, tc := range []struct {
		prefix, subject string
		data            []byte
		want            string // "" for an error
	}{
		{"lease", "lease.claimed.ns.mysql=2F0", claimed, "2026-01-02T02:04:05Z claimed ns/mysql/0 holder=h revision=12 duration=1m0s"},
		{"lease", "lease.expired.ns.mysql=2F0", expired, "2026-01-02T02:04:05Z expired ns/mysql/0 holder=h revision=12"},
		{"a.b", "a.b.expired.ns.mysql=2F0", expired, "2026-01-02T02:04:05Z expired ns/mysql/0 holder=h revision=12"},
		{"lease", "lease.expired.n=2Es.l=2F1", unnamed, "2026-01-02T02:04:05Z expired n.s/l/1 holder=h revision=7"},
		{"lease", "lease.expired.ns.l", []byte{0xff, 0xff}, ""},
		{"lease", "lease.renamed.ns.l", expired, ""},
		{"lease", "lease.expired.ns", expired, ""},
	} {
		got, err := formatEvent(at, tc.prefix, tc.subject, tc.data)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("formatEvent(%s) = %q, want an error", tc.subject, got)
		case tc.want != "" && (err != nil || got != tc.want):
			t.Errorf("formatEvent(%s) = %q, %v; want %q", tc.subject, got, err, tc.want)
		}
	}
}

func TestWatchSubjects(t *testing.T) {
	for _, tc := range []struct {
		prefix, ns string
		want       []string
	}{
		{"lease", "", []string{"lease.claimed.>", "lease.expired.>"}},
		{"lease", "ns", []string{"lease.claimed.ns.*", "lease.expired.ns.*"}},
		{"a.b", "my.app", []string{"a.b.claimed.my=2Eapp.*", "a.b.expired.my=2Eapp.*"}},
	} {
		if got := watchSubjects(tc.prefix, tc.ns); !slices.Equal(got, tc.want) {
			t.Errorf("watchSubjects(%q, %q) = %q, want %q", tc.prefix, tc.ns, got, tc.want)
		}
	}
}

// TestServeInProcess runs serve in this process, so that the race detector
// sees the daemon's start and stop, with the embedded server and with an
// external one.
func TestServeInProcess(t *testing.T) {
	external, err := embedded.Start(embedded.Config{Port: embedded.RandomPort, DataDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(external.Shutdown)

	for _, tc := range []struct {
		name  string
		cfg   serveConfig
		ready *regexp.Regexp
	}{
		{
			name:  "embedded",
			cfg:   serveConfig{Host: "127.0.0.1", Port: embedded.RandomPort, DataDir: t.TempDir()},
			ready: regexp.MustCompile(`^leaseagent listening on (nats://127\.0\.0\.1:\d+) \(embedded, data in .+\)$`),
		},
		{
			name:  "external",
			cfg:   serveConfig{NATSURL: external.ClientURL()},
			ready: regexp.MustCompile(`^leaseagent listening on (nats://127\.0\.0\.1:\d+) \(external, bucket leases\)$`),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Bucket, cfg.Replicas, cfg.Prefix = "leases", 1, "lease"
			cfg.MaxDuration, cfg.StartTimeout = time.Hour, waitLimit
			cfg.Ownership = agent.Ownership{AgentID: "in-process"}
			var logs syncBuffer
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			pr, pw := io.Pipe()
			defer pr.Close()
			done := make(chan error, 1)
			go func() {
				err := serve(ctx, cfg, pw, logger)
				_ = pw.Close()
				done <- err
			}()
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("logs:\n%s", logs.String())
				}
			})
			stdout := scanLines(pr, nil)
			line := nextLine(t, stdout, "ready line")
			m := tc.ready.FindStringSubmatch(line)
			if m == nil {
				cancel()
				<-done
				t.Fatalf("ready line %q does not match %v", line, tc.ready)
			}
			env := map[string]string{"LEASEAGENT_NATS_URL": m[1]}

			if _, stderr, code := runCLI(t, env, "claim", "ns", "l", "h", "1m"); code != 0 {
				t.Errorf("claim: exit code %d, stderr %q", code, stderr)
			}
			if _, stderr, code := runCLI(t, env, "claim", "ns", "l", "other", "1m"); code != exitNotHeld {
				t.Errorf("claim by another holder: exit code %d, stderr %q", code, stderr)
			}
			out, stderr, code := runCLI(t, env, "check", "ns", "l", "h")
			if code != 0 || !regexp.MustCompile(`^\d+\n$`).MatchString(out) {
				t.Errorf("check: exit code %d, stdout %q, stderr %q", code, out, stderr)
			}
			if _, stderr, code := runCLI(t, env, "release", "ns", "l", "h"); code != 0 {
				t.Errorf("release: exit code %d, stderr %q", code, stderr)
			}

			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve returned %v", err)
				}
			case <-time.After(waitLimit):
				t.Fatalf("serve did not return within %v", waitLimit)
			}
			if _, ok := <-stdout; ok {
				t.Errorf("serve wrote more than one line to stdout")
			}
			if !strings.Contains(logs.String(), "msg=stopped") {
				t.Errorf("logs lack the stopped line")
			}
		})
	}
}

// A credentials, certificate or key file that cannot be read is a usage
// error naming its flag, found before connecting or starting anything.
func TestUnreadableSecurityFilesAreUsageErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := writeFile(t, "not.pem", "not a certificate")
	jwtOnly := writeFile(t, "jwt-only.creds", "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.sig\n------END NATS USER JWT------\n")
	dataDir := filepath.Join(dir, "data")
	client := []string{"check", "--nats-url", "nats://127.0.0.1:1", "ns", "l", "h"}
	serve := []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"creds missing", append(client, "--creds", missing), "--creds"},
		{"creds not credentials", append(client, "--creds", notPEM), "--creds"},
		{"creds without a seed", append(client, "--creds", jwtOnly), "--creds"},
		{"nkey-seed not a seed", append(client, "--nkey-seed", notPEM), "--nkey-seed"},
		{"serve: creds not credentials", []string{"serve", "--nats-url", "nats://127.0.0.1:1", "--creds", notPEM}, "--creds"},
		{"tls-ca missing", append(client, "--tls-ca", missing), "--tls-ca"},
		{"tls-ca not PEM", append(client, "--tls-ca", notPEM), "--tls-ca"},
		{"tls-cert missing", append(client, "--tls-cert", missing, "--tls-key", missing), "--tls-cert"},
		{"tls-listen-cert missing", append(serve, "--tls-listen-cert", missing, "--tls-listen-key", missing), "--tls-listen-cert"},
		{"tls-listen-cert not PEM", append(serve, "--tls-listen-cert", notPEM, "--tls-listen-key", notPEM), "--tls-listen-cert"},
	} {
		t.Run(tc.name, func(t *testing.T) { requireUsageError(t, tc.want, tc.args...) })
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve left its data directory behind (stat: %v)", err)
	}
}

// A usage error about a flag that the environment or the config file set,
// not the command line, says where it was set: an operator who exported
// LEASEAGENT_NATS_URL for the operator commands is told why serve thinks
// it was given --nats-url.
func TestUsageErrorsSayWhereAFlagWasSet(t *testing.T) {
	config := filepath.Join(t.TempDir(), "agent.toml")
	if err := os.WriteFile(config, []byte("max_duration = \"-1h\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"environment", map[string]string{"LEASEAGENT_NATS_URL": "nats://127.0.0.1:1"},
			[]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", "x"}, "--nats-url is set by LEASEAGENT_NATS_URL"},
		{"config file", nil,
			[]string{"serve", "--config", config}, "--max-duration is set by max_duration in " + config},
		{"command line", nil,
			[]string{"serve", "--max-duration", "0s"}, "--max-duration must be positive, not 0s (see 'leaseagent serve --help')\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, tc.env, tc.args...)
			if code != exitUsage || stdout != "" {
				t.Errorf("exit code %d, stdout %q; want %d and nothing", code, stdout, exitUsage)
			}
			checkErrorLine(t, stderr, tc.want)
		})
	}
}

// The root's --help shows the exit codes, word for word as the package doc
// lists them.
func TestHelpShowsTheExitCodes(t *testing.T) {
	stdout, _, code := runCLI(t, nil, "--help")
	if code != 0 || !strings.Contains(stdout, exitCodesHelp) {
		t.Fatalf("--help: exit %d, output lacks the exit codes:\n%s", code, stdout)
	}
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	// The package doc's section, without its comment markers and its
	// first line, against the help's, without its heading.
	doc, _, _ := strings.Cut(string(src), "\npackage main")
	_, section, ok := strings.Cut(doc, "// # Exit codes\n")
	if !ok {
		t.Fatal("main.go: no '# Exit codes' in the package doc")
	}
	var words []string
	for _, line := range strings.Split(section, "\n") {
		line = strings.TrimPrefix(strings.TrimPrefix(line, "//"), "\t")
		if strings.Contains(line, "leaseagent --help") {
			continue
		}
		words = append(words, strings.Fields(line)...)
	}
	help := strings.Fields(strings.TrimPrefix(exitCodesHelp, "Exit codes:"))
	if !slices.Equal(words, help) {
		t.Errorf("the package doc's exit codes differ from --help's:\n%s\n\n%s", strings.Join(words, " "), strings.Join(help, " "))
	}
}

// A LEASEAGENT_ variable that no flag has (a misspelt one) is not ignored
// without a word: the command warns, naming it, and runs. Variables of
// flags of other commands, and empty ones, are no warning.
func TestUnknownEnvironmentVariablesAreWarnedOf(t *testing.T) {
	env := map[string]string{
		"LEASEAGENT_NATS_ULR": "nats://127.0.0.1:1", // misspelt
		"LEASEAGENT_VERSION":  "1",                  // --version is not a setting
		"LEASEAGENT_DATA_DIR": "/tmp/x",             // serve's
		"LEASEAGENT_TIMEOUT":  "3s",
		"LEASEAGENT_UNSET":    "",
		"OTHER_NATS_ULR":      "x",
	}
	stdout, stderr, code := runCLI(t, env, "version")
	if code != 0 || stdout != version+"\n" {
		t.Fatalf("version: code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "level=WARN") || !strings.HasSuffix(lines[0], "variable=LEASEAGENT_NATS_ULR") ||
		!strings.HasSuffix(lines[1], "variable=LEASEAGENT_VERSION") || !strings.Contains(lines[0], "unknown environment variable") {
		t.Errorf("stderr %q, want a warning for LEASEAGENT_NATS_ULR and one for LEASEAGENT_VERSION", stderr)
	}

	// The real process reads its environment.
	cmd := exec.Command(leaseagentBinary(t), "version", "--log-format", "json")
	cmd.Env = append(baseEnv(), "LEASEAGENT_PREFX=x")
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if out, err := cmd.Output(); err != nil || string(out) != version+"\n" ||
		!strings.Contains(errOut.String(), `"level":"WARN"`) || !strings.Contains(errOut.String(), `"variable":"LEASEAGENT_PREFX"`) {
		t.Errorf("leaseagent version with LEASEAGENT_PREFX set: %v, stdout %q, stderr %q; want a warning naming it", err, out, errOut.String())
	}
}
