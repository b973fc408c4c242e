package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/leaseagent/lease/embedded"
)

// execApp runs the command line in-process like run, and returns the app
// so that its flag values can be looked at.
func execApp(t *testing.T, env map[string]string, args ...string) (*app, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	var out, errOut bytes.Buffer
	a := &app{stdout: &out, stderr: &errOut, lookupEnv: envMap(env)}
	root := newRootCommand(a)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	return a, msg, exitCode(err)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func userKey(t *testing.T) (pub, seedFile string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err = kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return pub, writeFile(t, "user.nk", string(seed))
}

// TestConfigPrecedence checks flag > environment > config file > default,
// on a global flag (prefix), flags of serve (max-duration, bucket) and a
// repeatable one (auth-nkey).
func TestConfigPrecedence(t *testing.T) {
	k1, _ := userKey(t)
	k2, _ := userKey(t)
	k3, _ := userKey(t)
	file := writeFile(t, "leaseagent.toml", `
prefix       = "fromfile"
max_duration = "5m"
bucket       = "file-bucket"
replicas     = 3
auth_nkey    = ["`+k1+`", "`+k2+`"]
`)
	type want struct {
		prefix      string
		maxDuration time.Duration
		bucket      string
		replicas    int
		nkeys       []string
	}
	defaults := want{"lease", time.Hour, "leases", 1, nil}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want want
	}{
		{"defaults", nil, nil, defaults},
		{"file", nil, []string{"--config", file}, want{"fromfile", 5 * time.Minute, "file-bucket", 3, []string{k1, k2}}},
		{"file named by the environment", map[string]string{"LEASEAGENT_CONFIG": file}, nil,
			want{"fromfile", 5 * time.Minute, "file-bucket", 3, []string{k1, k2}}},
		{"environment over file",
			map[string]string{"LEASEAGENT_PREFIX": "fromenv", "LEASEAGENT_MAX_DURATION": "7m", "LEASEAGENT_AUTH_NKEY": k3},
			[]string{"--config", file}, want{"fromenv", 7 * time.Minute, "file-bucket", 3, []string{k3}}},
		{"flag over environment and file",
			map[string]string{"LEASEAGENT_PREFIX": "fromenv", "LEASEAGENT_MAX_DURATION": "7m"},
			[]string{"--config", file, "--prefix", "fromflag", "--max-duration", "9m", "--auth-nkey", k3, "--auth-nkey", k1},
			want{"fromflag", 9 * time.Minute, "file-bucket", 3, []string{k3, k1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// --timeout 0s stops serve after the flags are read, before
			// it starts anything.
			a, msg, code := execApp(t, tc.env, append([]string{"serve", "--timeout", "0s"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(msg, "--timeout must be positive") {
				t.Fatalf("exit code %d, error %q; want the --timeout usage error", code, msg)
			}
			got := want{a.prefix, a.maxDuration, a.bucket, a.replicas, a.authNKeys}
			if got.prefix != tc.want.prefix || got.maxDuration != tc.want.maxDuration || got.bucket != tc.want.bucket ||
				got.replicas != tc.want.replicas || !slices.Equal(got.nkeys, tc.want.nkeys) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string // config file content; "" means a missing file
		args []string
		want []string
	}{
		{"missing file", "", nil, []string{"--config:", "no such file"}},
		{"syntax", "bucket = \"x\"\nreplicas = = 2\n", nil, []string{"line 2"}},
		{"unknown key", "listn = \"127.0.0.1:4222\"\n", nil, []string{`unknown key "listn"`, "listen", "max_duration"}},
		{"key with dash", "max-duration = \"5m\"\n", nil, []string{`unknown key "max-duration"`}},
		{"config key", "config = \"other.toml\"\n", nil, []string{`unknown key "config"`}},
		{"table", "[auth]\nuser = \"x\"\n", nil, []string{`unknown key "auth"`}},
		{"bad value", "replicas = \"three\"\n", nil, []string{"replicas:", `"three"`}},
		{"bad duration", "max_duration = 5\n", nil, []string{"max_duration:", "missing unit"}},
		{"array for one value", "bucket = [\"a\", \"b\"]\n", nil, []string{"bucket: want one value"}},
		{"policy rule", "[namespaces.x]\nmin_duration = \"5s\"\nmax_duration = \"1s\"\n", nil,
			[]string{`namespace "x": max_duration 1s is below min_duration 5s`}},
		{"policy pattern", "[namespaces.x]\nlease_pattern = '(['\n", nil,
			[]string{"line 2", "namespaces.x.lease_pattern", "bad regular expression"}},
		{"policy above --max-duration", "[namespaces.x]\nmax_duration = \"5m\"\n", []string{"--max-duration", "1m"},
			[]string{`namespace "x": max_duration 5m0s is above the global max_duration 1m0s`}},
		{"embedded flag with --nats-url", "auth_user = \"u\"\nauth_password = \"p\"\n", []string{"--nats-url", "nats://127.0.0.1:1"},
			[]string{"--auth-user configures the embedded server"}},
		{"nkeys without an identity", "auth_nkey = [\"UDMGIILNFTOWLY2AJSDSO6ANUYTWJ7Z6U4HKMGXVJZJPT5V5W4BIQKEW\"]\n", nil,
			[]string{"--auth-nkey needs --auth-nkey-seed"}},
		{"password without user", "auth_password = \"p\"\n", nil, []string{"--auth-user: must be set with --auth-password"}},
		{"token and user", "auth_token = \"t\"\nauth_user = \"u\"\nauth_password = \"p\"\n", nil, []string{"--auth-token: cannot be combined"}},
		{"bad nkey", "auth_nkey = [\"nope\"]\nauth_user = \"u\"\nauth_password = \"p\"\n", nil, []string{`--auth-nkey[0]: "nope" is not a public user nkey`}},
		{"CA without certificate", "tls_listen_ca = \"ca.pem\"\n", nil, []string{"--tls-listen-ca: needs --tls-listen-cert"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "missing.toml")
			if tc.file != "" {
				path = writeFile(t, "leaseagent.toml", tc.file)
			}
			// --listen 127.0.0.1:0 and --data-dir keep serve off the
			// default port and directory, should the error not come.
			args := append([]string{"serve", "--config", path}, tc.args...)
			if !slices.Contains(tc.args, "--nats-url") {
				args = append(args, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--timeout", "1ms")
			}
			stdout, stderr, code := runCLI(t, nil, args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr %q", code, exitUsage, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			for _, w := range tc.want {
				checkErrorLine(t, stderr, w)
			}
		})
	}
}

// TestConfigOnOperatorCommands: the file applies to every command, which
// ignore the keys of flags they do not have.
func TestConfigOnOperatorCommands(t *testing.T) {
	url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	file := writeFile(t, "leaseagent.toml", "nats_url = \""+url+"\"\nlisten = \"0.0.0.0:1\"\ntimeout = \"1s\"\n[namespaces.x]\n")
	_, stderr, code := runCLI(t, nil, "claim", "--config", file, "ns", "l", "h", "1s")
	if code != exitUnavailable {
		t.Errorf("exit code %d, want %d; stderr %q", code, exitUnavailable, stderr)
	}
	checkErrorLine(t, stderr, "connect to "+url)
}

// TestConfigValuesAreCheckedWhereverTheyApply: a value is checked even
// where the running command does not use it (a file shared by the daemon
// and the CLI) or the command line overrides it: a mistake in the file must
// not wait to be found until the daemon restarts.
func TestConfigValuesAreCheckedWhereverTheyApply(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		args []string
		want string
	}{
		{"array for a serve flag, on claim", "listen = [\"a\", \"b\"]\n", []string{"claim", "ns", "l", "h", "1s"}, "listen: want one value"},
		{"bad number for a serve flag, on claim", "replicas = \"three\"\n", []string{"claim", "ns", "l", "h", "1s"}, `replicas: invalid argument "three"`},
		{"bad duration overridden on the command line", "timeout = \"soon\"\n", []string{"claim", "--timeout", "1s", "ns", "l", "h", "1s"}, `timeout: invalid argument "soon"`},
		{"table for a flag", "[listen]\nx = 1\n", []string{"claim", "ns", "l", "h", "1s"}, "listen: want a string, number or boolean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, "leaseagent.toml", tc.file)
			args := append([]string{"--config", file, "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))}, tc.args...)
			stdout, stderr, code := runCLI(t, nil, args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr %q", code, exitUsage, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			checkErrorLine(t, stderr, tc.want)
		})
	}
}

// TestExampleConfigFile loads docs/leaseagent.example.toml the way serve
// does.
func TestExampleConfigFile(t *testing.T) {
	a, msg, code := execApp(t, nil, "serve", "--config", exampleConfig(t), "--timeout", "0s")
	if code != exitUsage || !strings.Contains(msg, "--timeout must be positive") {
		t.Fatalf("exit code %d, error %q; want only the --timeout usage error", code, msg)
	}
	if a.policy == nil || len(a.policy.Namespaces) != 2 || a.policy.DenyUnknown {
		t.Fatalf("policy %+v, want Juju's two namespaces, unknown ones allowed", a.policy)
	}
	al := a.policy.Namespaces["application-leadership"]
	if al.MinDuration != 5*time.Second || al.MaxDuration != 5*time.Minute || !al.Lease.Match("mysql") || !al.Holder.Match("mysql/0") || al.Holder.Match("mysql") {
		t.Errorf("application-leadership = %+v", al)
	}
	if sc := a.policy.Namespaces["singular-controller"]; sc.MinDuration != time.Second || sc.MaxDuration != time.Minute {
		t.Errorf("singular-controller = %+v", sc)
	}
	if a.maxDuration != time.Hour || a.bucket != "leases" {
		t.Errorf("max duration %v, bucket %q", a.maxDuration, a.bucket)
	}
}

// serveInProcess runs `leaseagent args...` in this process until the test
// ends, and returns the URL it serves on and its log.
func serveInProcess(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	logs := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		code := run(ctx, args, pw, logs, nil)
		_ = pw.Close()
		done <- code
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("leaseagent %s: exit code %d", strings.Join(args, " "), code)
			}
		case <-time.After(waitLimit):
			t.Errorf("leaseagent %s did not stop within %v", strings.Join(args, " "), waitLimit)
		}
		_ = pr.Close()
		if t.Failed() {
			t.Logf("log of leaseagent %s:\n%s", strings.Join(args, " "), logs.String())
		}
	})
	line := nextLine(t, scanLines(pr, nil), "ready line")
	m := readyLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("ready line %q", line)
	}
	return m[1], logs
}

// TestServeAuthInProcess runs serve in this process with token and nkey
// authentication, so that the race detector sees it, and the CLI with
// right and wrong credentials.
func TestServeAuthInProcess(t *testing.T) {
	_, agentSeed := userKey(t)
	userPub, userSeed := userKey(t)
	_, strangerSeed := userKey(t)
	for _, tc := range []struct {
		name  string
		serve []string
		good  []string
		bad   [][]string
	}{
		{"token", []string{"--auth-token", "t0k"}, []string{"--token", "t0k"},
			[][]string{{"--token", "bad"}, {}}},
		{"nkeys", []string{"--auth-nkey-seed", agentSeed, "--auth-nkey", userPub}, []string{"--nkey-seed", userSeed},
			[][]string{{"--nkey-seed", strangerSeed}, {}}},
		{"agent's own nkey", []string{"--auth-nkey-seed", agentSeed}, []string{"--nkey-seed", agentSeed},
			[][]string{{"--nkey-seed", userSeed}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, _ := serveInProcess(t, append([]string{"--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, tc.serve...)...)
			env := map[string]string{"LEASEAGENT_NATS_URL": url}
			if _, stderr, code := runCLI(t, env, append(tc.good, "claim", "ns", "l", "h", "1m")...); code != 0 {
				t.Fatalf("claim with good credentials: exit code %d, stderr %q", code, stderr)
			}
			for _, bad := range tc.bad {
				_, stderr, code := runCLI(t, env, append(bad, "check", "ns", "l", "h")...)
				if code != exitUsage {
					t.Errorf("check with %v: exit code %d, want %d; stderr %q", bad, code, exitUsage, stderr)
				}
				checkErrorLine(t, stderr, "authorization failed")
			}
		})
	}
	t.Run("bad seed file", func(t *testing.T) {
		notSeed := writeFile(t, "not.nk", "hello")
		_, stderr, code := runCLI(t, nil, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--auth-nkey-seed", notSeed)
		if code != exitUsage {
			t.Errorf("exit code %d, want %d", code, exitUsage)
		}
		checkErrorLine(t, stderr, "--auth-nkey-seed: "+notSeed+" holds no user nkey seed")
	})
}

// TestExposedWarning: a non-loopback listener without authentication is
// warned about; with authentication, or on loopback, it is not.
func TestExposedWarning(t *testing.T) {
	const warning = "non-loopback address without authentication"
	for _, tc := range []struct {
		name string
		args []string
		warn bool
	}{
		{"all interfaces, no auth", []string{"--listen", "0.0.0.0:0"}, true},
		{"all interfaces, token", []string{"--listen", "0.0.0.0:0", "--auth-token", "t"}, false},
		{"loopback, no auth", []string{"--listen", "127.0.0.1:0"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, logs := serveInProcess(t, append(tc.args, "--data-dir", t.TempDir())...)
			if got := strings.Contains(logs.String(), warning); got != tc.warn {
				t.Errorf("warned %v, want %v; log:\n%s", got, tc.warn, logs.String())
			}
		})
	}
	if !isLoopback("::1") || !isLoopback("localhost") || isLoopback("0.0.0.0") || isLoopback("10.0.0.1") || isLoopback("example.com") {
		t.Error("isLoopback is wrong")
	}
	// The warning names the address.
	var buf bytes.Buffer
	warnIfExposed(slog.New(slog.NewTextHandler(&buf, nil)), serveConfig{Host: "0.0.0.0", Port: 4222, Auth: embedded.Auth{}})
	if !regexp.MustCompile(`level=WARN .*listen=0\.0\.0\.0:4222`).MatchString(buf.String()) {
		t.Errorf("warning %q", buf.String())
	}
}
