package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/internal/testcert"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// refusedWithin bounds how long a command refused by the NATS server may
// take: a refusal must be reported, not waited out.
const refusedWithin = 5 * time.Second

// readyLine is the line serve prints when it is ready; group 1 is the URL.
var readyLine = regexp.MustCompile(`^leaseagent listening on (nats://\S+) \(`)

// startAgent starts leaseagent with args (which should pick a free port,
// --listen 127.0.0.1:0, or name an external server) and returns it and
// the URL it prints once ready.
func startAgent(t *testing.T, args ...string) (*proc, string) {
	t.Helper()
	p := start(t, "", args...)
	select {
	case line, ok := <-p.stdout:
		if !ok {
			code := p.exitCode(t)
			t.Fatalf("leaseagent %s exited with code %d before it was ready:\n%s", strings.Join(args, " "), code, p.logs.String())
		}
		m := readyLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("ready line %q", line)
		}
		return p, m[1]
	case <-time.After(waitLimit):
		t.Fatalf("leaseagent %s not ready within %v", strings.Join(args, " "), waitLimit)
	}
	return nil, ""
}

// timedCLI is cli that also fails the test if the command took longer than
// limit.
func timedCLI(t *testing.T, limit time.Duration, natsURL string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	begin := time.Now()
	stdout, stderr, code = cli(t, natsURL, args...)
	if took := time.Since(begin); took > limit {
		t.Errorf("leaseagent %s took %v, want at most %v", strings.Join(args, " "), took, limit)
	}
	return stdout, stderr, code
}

// exampleConfig is the example config file shipped in docs.
func exampleConfig(t *testing.T) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("..", "..", "docs", "leaseagent.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPasswordAndPolicyAgainstTheDaemon runs the daemon with a password and
// the example config file's policy, and the CLI against it as real
// processes.
func TestPasswordAndPolicyAgainstTheDaemon(t *testing.T) {
	_, url := startAgent(t, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--config", exampleConfig(t), "--auth-user", "leaseagent", "--auth-password", "pw-1")
	good := []string{"--user", "leaseagent", "--password", "pw-1"}
	const al = "application-leadership"

	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string // in stderr
	}{
		{"right password", append(good, "claim", al, "mysql", "mysql/0", "1m"), 0, nil},
		{"held", append(good, "check", al, "mysql", "mysql/0"), 0, nil},
		{"wrong password", []string{"--user", "leaseagent", "--password", "wrong", "claim", al, "mysql", "mysql/1", "1m"},
			exitUsage, []string{"authorization failed", "Authorization Violation"}},
		{"no credentials", []string{"leases", al},
			exitUsage, []string{"authorization failed"}},
		{"token instead", []string{"--token", "pw-1", "leases", al},
			exitUsage, []string{"authorization failed"}},
		{"policy: too short", append(good, "claim", al, "mysql", "mysql/0", "1s"),
			exitUsage, []string{`namespace "application-leadership": duration 1s is below the minimum 5s`}},
		{"policy: holder", append(good, "claim", al, "mysql", "machine-0", "1m"),
			exitUsage, []string{`holder name "machine-0" does not match holder_pattern`}},
		{"policy: other namespace, global limits", append(good, "claim", "other", "Any", "thing", "59m"), 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := timedCLI(t, refusedWithin, url, tc.args...)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr %q", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				checkErrorLine(t, stderr, w)
			}
		})
	}
}

// TestTLSAgainstTheDaemon runs the daemon with TLS and client
// certificates required (and a token), with a throwaway CA.
func TestTLSAgainstTheDaemon(t *testing.T) {
	files := testcert.Write(t)
	_, url := startAgent(t, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--auth-token", "t0k",
		"--tls-listen-cert", files.ServerCert, "--tls-listen-key", files.ServerKey, "--tls-listen-ca", files.CA)
	tlsArgs := []string{"--token", "t0k", "--tls-ca", files.CA, "--tls-cert", files.ClientCert, "--tls-key", files.ClientKey}

	mustCLI(t, url, 0, append(tlsArgs, "claim", "ns", "l", "h", "1m")...)
	mustCLI(t, url, 0, append(tlsArgs, "check", "ns", "l", "h")...)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no CA", []string{"--token", "t0k"}, "certificate signed by unknown authority"},
		{"unknown CA", []string{"--token", "t0k", "--tls-cert", files.ClientCert, "--tls-key", files.ClientKey}, "certificate"},
		{"no client certificate", []string{"--token", "t0k", "--tls-ca", files.CA}, "connect to"},
		{"wrong token", append([]string{"--tls-ca", files.CA, "--tls-cert", files.ClientCert, "--tls-key", files.ClientKey}, "--token", "bad"), "authorization failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := timedCLI(t, refusedWithin, url, append(tc.args, "--timeout", "3s", "check", "ns", "l", "h")...)
			if code == 0 || code == exitNotHeld {
				t.Fatalf("exit code %d, want a failure; stderr %q", code, stderr)
			}
			checkErrorLine(t, stderr, tc.want)
		})
	}
}

var (
	natsServerOnce sync.Once
	natsServerPath string
	natsServerErr  error
)

// natsServerBinary builds nats-server, the version in go.mod, once per
// test run, next to the leaseagent binary.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(leaseagentBinary(t))
	natsServerOnce.Do(func() {
		natsServerPath = filepath.Join(dir, "nats-server")
		out, err := exec.Command("go", "build", "-o", natsServerPath, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsServerErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if natsServerErr != nil {
		t.Fatal(natsServerErr)
	}
	return natsServerPath
}

// startNATSServer runs nats-server with the config text and returns its
// client URL once it is ready.
func startNATSServer(t *testing.T, config string) string {
	t.Helper()
	confPath := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(confPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(natsServerBinary(t), "-c", confPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := scanLines(stderr, logs)
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("nats-server log:\n%s", logs.String())
		}
	})
	listening := regexp.MustCompile(`Listening for client connections on (\S+)`)
	var url string
	deadline := time.After(waitLimit)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("nats-server exited:\n%s", logs.String())
			}
			if m := listening.FindStringSubmatch(line); m != nil {
				url = "nats://" + m[1]
			}
			if strings.Contains(line, "Server is ready") {
				if url == "" {
					t.Fatalf("nats-server ready without saying where it listens:\n%s", logs.String())
				}
				return url
			}
		case <-deadline:
			t.Fatalf("nats-server not ready within %v:\n%s", waitLimit, logs.String())
		}
	}
}

// exampleNATSConfig is docs/nats-server.example.conf, made to listen on a
// free port and store under dir, with one user more: testAdmin, who may
// do anything, for the tests to set up and look at what no user of the
// example may. Each edit then replaces every occurrence of its first
// string, which must be there, with its second.
func exampleNATSConfig(t *testing.T, dir string, edits ...[2]string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", "nats-server.example.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(data)
	for _, e := range append([][2]string{
		{"listen: 127.0.0.1:4222", "listen: 127.0.0.1:-1"},
		{`store_dir: "/var/lib/nats"`, fmt.Sprintf("store_dir: %q", dir)},
		{"users = [\n", fmt.Sprintf("users = [\n    { user: %q, password: %q }\n", testAdmin[1], testAdmin[3])},
	}, edits...) {
		if !strings.Contains(conf, e[0]) {
			t.Fatalf("docs/nats-server.example.conf lacks %q", e[0])
		}
		conf = strings.ReplaceAll(conf, e[0], e[1])
	}
	return conf
}

// TestExternalServerAuthAndNamespacePermissions runs the example
// nats-server config of docs/security.md with a real nats-server, the
// agent in external mode and the CLI and client package as a service
// limited to namespace "a".
func TestExternalServerAuthAndNamespacePermissions(t *testing.T) {
	url := startNATSServer(t, exampleNATSConfig(t, t.TempDir()))

	// The agent with a wrong password fails at start-up, at once and
	// clearly.
	begin := time.Now()
	bad := start(t, "", "--nats-url", url, "--user", "leaseagent", "--password", "wrong")
	if code := bad.exitCode(t); code != exitUsage {
		t.Errorf("agent with a wrong password: exit code %d, want %d", code, exitUsage)
	}
	if took := time.Since(begin); took > refusedWithin {
		t.Errorf("agent with a wrong password took %v to fail", took)
	}
	if logs := bad.logs.String(); !strings.Contains(logs, "authorization failed") || !strings.Contains(logs, "Authorization Violation") {
		t.Errorf("agent with a wrong password said:\n%s", logs)
	}

	// With its own credentials it serves.
	_, served := startAgent(t, "--nats-url", url, "--user", "leaseagent", "--password", "agent-secret")
	if served != url {
		t.Errorf("agent serves %s, want %s", served, url)
	}

	serviceA := []string{"--user", "service-a", "--password", "a-secret"}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"claim in a", append(serviceA, "claim", "a", "leader", "unit-0", "1m"), 0, ""},
		{"check in a", append(serviceA, "check", "a", "leader", "unit-0"), 0, ""},
		{"leases of a", append(serviceA, "leases", "a"), 0, ""},
		{"claim in b", append(serviceA, "claim", "b", "leader", "unit-0", "1m"),
			exitUsage, `Permissions Violation for Publish to "lease.claim.b"`},
		{"leases of b", append(serviceA, "leases", "b"),
			exitUsage, `Permissions Violation for Publish to "lease.list.b"`},
		{"wait in b", append(serviceA, "wait", "b", "leader"),
			exitUsage, "Permissions Violation"},
		{"wrong password", []string{"--user", "service-a", "--password", "b-secret", "claim", "a", "leader", "unit-0", "1m"},
			exitUsage, "authorization failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := timedCLI(t, refusedWithin, url, tc.args...)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr %q", code, tc.code, stderr)
			}
			if tc.want != "" {
				checkErrorLine(t, stderr, tc.want)
			}
		})
	}

	// The client package, as service-a: namespace a works; a request in b
	// is refused by the server, which the connection's error handler hears.
	refused := make(chan error, 8)
	nc, err := nats.Connect(url, nats.UserInfo("service-a", "a-secret"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		refused <- err
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c, err := client.New(nc, client.WithRequestTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := c.Namespace("a").ClaimContext(ctx, "other", "unit-1", time.Minute); err != nil {
		t.Fatalf("client claim in a: %v", err)
	}
	bctx, bcancel := context.WithTimeout(ctx, 2*time.Second)
	defer bcancel()
	if err := c.Namespace("b").ClaimContext(bctx, "other", "unit-1", time.Minute); err == nil {
		t.Fatal("client claim in b succeeded")
	}
	select {
	case err := <-refused:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "lease.claim.b") {
			t.Errorf("error handler got %v, want a permissions violation on lease.claim.b", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("no permissions violation reported")
	}

	// b was never claimed.
	mustCLI(t, url, exitNotHeld, append(testAdmin, "check", "b", "leader", "unit-0")...)
}

// TestSecurityDocHasTheTestedConfig keeps docs/security.md's nats-server
// config the one tested above.
func TestSecurityDocHasTheTestedConfig(t *testing.T) {
	conf, err := os.ReadFile(filepath.Join("..", "..", "docs", "nats-server.example.conf"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), string(conf)) {
		t.Error("docs/security.md does not include docs/nats-server.example.conf as it is")
	}
}

// TestWatchOfAForbiddenNamespaceFailsAtOnce runs watch as service-a of the
// example nats-server config on event subjects it may not subscribe to: the
// server refuses the subscription, and watch must say so and exit 2 at
// once, not print nothing until --timeout and exit 0.
func TestWatchOfAForbiddenNamespaceFailsAtOnce(t *testing.T) {
	url := startNATSServer(t, exampleNATSConfig(t, t.TempDir()))
	startAgent(t, "--nats-url", url, "--user", "leaseagent", "--password", "agent-secret")
	serviceA := []string{"--user", "service-a", "--password", "a-secret", "--timeout", "15s"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"other namespace", []string{"watch", "b"}, `Permissions Violation for Subscription to "lease.claimed.b.*"`},
		{"every namespace", []string{"watch"}, `Permissions Violation for Subscription to "lease.claimed.>"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := timedCLI(t, refusedWithin, url, append(serviceA, tc.args...)...)
			if code != exitUsage {
				t.Fatalf("exit code %d, want %d; stderr %q", code, exitUsage, stderr)
			}
			checkErrorLine(t, stderr, tc.want)
		})
	}
}

// The users of docs/nats-server.example.conf, as CLI flags.
var (
	exampleAgent    = []string{"--user", "leaseagent", "--password", "agent-secret"}
	exampleService  = []string{"--user", "service-a", "--password", "a-secret"}
	exampleObserver = []string{"--user", "observer-a", "--password", "o-secret"}
	exampleOperator = []string{"--user", "operator", "--password", "op-secret"}
	// testAdmin is the user exampleNATSConfig adds: it may do anything.
	testAdmin = []string{"--user", "test-admin", "--password", "admin-secret"}
)

// startExampleSetup runs nats-server with docs/nats-server.example.conf and
// the agent on it as its user, with agent ID agent-1, and returns the
// server's URL.
func startExampleSetup(t *testing.T) string {
	t.Helper()
	url := startNATSServer(t, exampleNATSConfig(t, t.TempDir()))
	startExampleAgent(t, url, "agent-1")
	return url
}

// startExampleAgent starts an agent on the server at url as the agent's
// user of docs/nats-server.example.conf, with agent ID id and more args.
func startExampleAgent(t *testing.T, url, id string, args ...string) *proc {
	t.Helper()
	p, _ := startAgent(t, append(append([]string{"--nats-url", url, "--agent-id", id}, exampleAgent...), args...)...)
	return p
}

// TestExampleNATSConfigAllowsEachRoleItsCommands runs, as each user of
// docs/nats-server.example.conf, every command docs/security.md says that
// user may run.
func TestExampleNATSConfigAllowsEachRoleItsCommands(t *testing.T) {
	url := startExampleSetup(t)
	// Something to find: a lease in a (held), one in b.
	mustCLI(t, url, 0, append(exampleService, "claim", "a", "held", "unit-0", "1m")...)
	mustCLI(t, url, 0, append(testAdmin, "claim", "b", "other", "unit-0", "1m")...)

	for _, tc := range []struct {
		name string
		args []string
		want []string // in stdout
	}{
		{"service: claim", append(exampleService, "claim", "a", "leader", "unit-0", "1m"), nil},
		{"service: check", append(exampleService, "check", "a", "held", "unit-0"), nil},
		{"service: leases", append(exampleService, "leases", "a"), []string{"held"}},
		{"service: wait", append(exampleService, "--timeout", "5s", "wait", "a", "free"), nil},
		{"service: hold", append(exampleService, "--timeout", "5s", "hold", "a", "job", "unit-0", "5s", "--", "true"), nil},
		{"service: release", append(exampleService, "release", "a", "held", "unit-0"), nil},
		{"observer: check", append(exampleObserver, "check", "a", "leader", "unit-0"), nil},
		{"observer: leases", append(exampleObserver, "leases", "a"), []string{"leader"}},
		{"observer: wait", append(exampleObserver, "--timeout", "5s", "wait", "a", "free"), nil},
		{"operator: status", append(exampleOperator, "status", "--json"), []string{`"name": "a"`, `"name": "b"`, `"stream": "KV_leases"`, `"id": "agent-1"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, _ := mustCLI(t, url, 0, tc.args...)
			for _, w := range tc.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout %q lacks %q", stdout, w)
				}
			}
		})
	}
}

// TestExampleNATSConfigLetsEachRoleWatchItsNamespace runs watch a as the
// service and the observer of docs/nats-server.example.conf: each sees a
// claim and a release in a.
func TestExampleNATSConfigLetsEachRoleWatchItsNamespace(t *testing.T) {
	url := startExampleSetup(t)
	for i, tc := range []struct {
		name string
		user []string
	}{
		{"service", exampleService},
		{"observer", exampleObserver},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := start(t, url, append(tc.user, "--log-level", "debug", "watch", "a")...)
			lineContaining(t, w.stderr, "watching") // subscribed
			leaseName := fmt.Sprintf("watched-%d", i)
			mustCLI(t, url, 0, append(exampleService, "claim", "a", leaseName, "unit-0", "1m")...)
			mustCLI(t, url, 0, append(exampleService, "release", "a", leaseName, "unit-0")...)
			lineContaining(t, w.stdout, "claimed a/"+leaseName+" holder=unit-0")
			lineContaining(t, w.stdout, "expired a/"+leaseName+" holder=unit-0")
			if code := w.stop(t, os.Interrupt); code != 0 {
				t.Errorf("watch stopped with exit code %d, want 0", code)
			}
		})
	}
}

// TestExampleNATSConfigRefusesEachRoleTheRest runs, as each user of
// docs/nats-server.example.conf, commands docs/security.md says that user
// may not run: each fails at once with exit code 2 naming the refused
// subject.
func TestExampleNATSConfigRefusesEachRoleTheRest(t *testing.T) {
	url := startExampleSetup(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"service: claim in b", append(exampleService, "claim", "b", "leader", "unit-0", "1m"), `Publish to "lease.claim.b"`},
		{"service: watch b", append(exampleService, "watch", "b"), `Subscription to "lease.claimed.b.*"`},
		{"service: status", append(exampleService, "status"), `Publish to "$SRV.INFO.leaseagent"`},
		{"observer: claim", append(exampleObserver, "claim", "a", "leader", "unit-0", "1m"), `Publish to "lease.claim.a"`},
		{"observer: release", append(exampleObserver, "release", "a", "leader", "unit-0"), `Publish to "lease.release.a"`},
		{"observer: hold", append(exampleObserver, "hold", "a", "leader", "unit-0", "5s", "--", "true"), `Publish to "lease.claim.a"`},
		{"observer: leases of b", append(exampleObserver, "leases", "b"), `Publish to "lease.list.b"`},
		{"observer: watch b", append(exampleObserver, "watch", "b"), `Subscription to "lease.claimed.b.*"`},
		{"operator: claim", append(exampleOperator, "claim", "a", "leader", "unit-0", "1m"), `Publish to "lease.claim.a"`},
		{"operator: leases", append(exampleOperator, "leases", "a"), `Publish to "lease.list.a"`},
		{"operator: watch", append(exampleOperator, "watch"), `Subscription to "lease.claimed.>"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := timedCLI(t, refusedWithin, url, tc.args...)
			if code != exitUsage {
				t.Fatalf("exit code %d, want %d; stderr %q", code, exitUsage, stderr)
			}
			checkErrorLine(t, stderr, "Permissions Violation for "+tc.want)
		})
	}
}

// TestExampleNATSConfigKeepsTheAgentsSubjectsAndTheBucketTheAgents tries,
// as each user of docs/nats-server.example.conf other than the agent's,
// what docs/security.md says only the agent may do: publish events, write
// the bucket, reach other agents, pose as an agent or take requests.
func TestExampleNATSConfigKeepsTheAgentsSubjectsAndTheBucketTheAgents(t *testing.T) {
	url := startExampleSetup(t)
	users := map[string][2]string{
		"service":  {"service-a", "a-secret"},
		"observer": {"observer-a", "o-secret"},
		"operator": {"operator", "op-secret"},
	}
	forbidden := []natsAction{
		{"forge an expiry", false, "lease.expired.a.leader"},
		{"forge a claim", false, "lease.claimed.a.leader"},
		{"write the bucket", false, "$KV.leases.a.leader"},
		{"purge the bucket", false, "$JS.API.STREAM.PURGE.KV_leases"},
		{"delete from the bucket", false, "$JS.API.STREAM.MSG.DELETE.KV_leases"},
		{"forward to an agent", false, "_leaseagent.lease.agent-1.claim.b"},
		{"answer an agent's forwards", true, "_leaseagent.>"},
		{"take the requests", true, "lease.claim.a"},
		{"pose as an agent in discovery", true, "$SRV.>"},
		{"hear other namespaces' events", true, "lease.expired.b.leader"},
		{"read the bucket's updates", true, "$KV.leases.>"},
	}
	for role, cred := range users {
		for _, a := range forbidden {
			t.Run(role+": "+a.name, func(t *testing.T) { requireRefused(t, url, cred[0], cred[1], a) })
		}
	}
}

// natsAction is a publish or a subscription on a subject.
type natsAction struct {
	name      string
	subscribe bool // else publish
	subject   string
}

// requireRefused connects to url as user and does a: the server must
// refuse it, at once, naming its subject.
func requireRefused(t *testing.T, url, user, password string, a natsAction) {
	t.Helper()
	refused := make(chan error, 4)
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		refused <- err
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if a.subscribe {
		_, err = nc.SubscribeSync(a.subject)
	} else {
		err = nc.Publish(a.subject, []byte("forged"))
	}
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-refused:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), `"`+a.subject+`"`) {
			t.Errorf("refused with %v, want a permissions violation on %q", err, a.subject)
		}
	case <-time.After(refusedWithin):
		t.Errorf("%s on %q was not refused", map[bool]string{false: "publish", true: "subscribe"}[a.subscribe], a.subject)
	}
}

// TestExampleNATSConfigConfinesTheAgent tries, as the agent's user of
// docs/nats-server.example.conf, what the agent has no business doing:
// the server refuses each, so the permissions the other tests run the
// agent with do confine it. The agent serves on, its bucket intact.
func TestExampleNATSConfigConfinesTheAgent(t *testing.T) {
	url := startExampleSetup(t)
	mustCLI(t, url, 0, append(exampleService, "claim", "a", "leader", "unit-0", "1m")...)
	for _, a := range []natsAction{
		{"delete the bucket", false, "$JS.API.STREAM.DELETE.KV_leases"},
		{"purge the bucket", false, "$JS.API.STREAM.PURGE.KV_leases"},
		{"delete a record", false, "$JS.API.STREAM.MSG.DELETE.KV_leases"},
		{"read a follower's copy, maybe stale", false, "$JS.API.DIRECT.GET.KV_leases.$KV.leases.a.leader"},
		{"create another stream", false, "$JS.API.STREAM.CREATE.KV_other"},
		{"list the account's streams", false, "$JS.API.STREAM.LIST"},
		{"write another bucket", false, "$KV.other.a.leader"},
		{"send a lease request", false, "lease.claim.a"},
		{"publish on a reply subject nobody asked on", false, "_INBOX.unasked"},
		{"publish on another application's subject", false, "orders.created"},
		{"hear the events", true, "lease.expired.>"},
		{"tap the bucket's writes", true, "$KV.leases.>"},
		{"answer another service's discovery", true, "$SRV.INFO.billing"},
		{"hear everything", true, ">"},
	} {
		t.Run(a.name, func(t *testing.T) { requireRefused(t, url, "leaseagent", "agent-secret", a) })
	}
	mustCLI(t, url, 0, append(exampleService, "check", "a", "leader", "unit-0")...)
}

// eventRevision is the revision a line of `leaseagent watch` names.
var eventRevision = regexp.MustCompile(` revision=(\d+)`)

// TestExampleNATSConfigAgentExpiresAndAnnounces runs the agent with its
// permissions of docs/nats-server.example.conf, and with --prefix and
// --bucket and those permissions rewritten as the file's comment says: it
// serves claim, check, leases and wait (state), announces a claim, expires
// a lease claimed for a second on its own timer and announces that with
// the claim's revision.
func TestExampleNATSConfigAgentExpiresAndAnnounces(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edits [][2]string
		flags []string // of the agent
	}{
		{"default prefix and bucket", nil, nil},
		{"--prefix locks --bucket held", [][2]string{
			{`"lease.`, `"locks.`},
			{`"_leaseagent.lease.>"`, `"_leaseagent.locks.>"`},
			{`"$KV.leases.>"`, `"$KV.held.>"`},
			{"KV_leases", "KV_held"},
		}, []string{"--prefix", "locks", "--bucket", "held"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := startNATSServer(t, exampleNATSConfig(t, t.TempDir(), tc.edits...))
			startExampleAgent(t, url, "agent-1", tc.flags...)
			service := exampleService
			if len(tc.flags) > 0 {
				service = append(append([]string{}, exampleService...), tc.flags[:2]...) // --prefix
			}
			w := start(t, url, append(service, "--log-level", "debug", "watch", "a")...)
			lineContaining(t, w.stderr, "watching")

			mustCLI(t, url, 0, append(service, "claim", "a", "brief", "unit-0", "1s")...)
			mustCLI(t, url, 0, append(service, "check", "a", "brief", "unit-0")...)
			if out, _ := mustCLI(t, url, 0, append(service, "leases", "a")...); !strings.Contains(out, "brief") {
				t.Errorf("leases a printed %q, want the lease brief", out)
			}
			claimed := lineContaining(t, w.stdout, "claimed a/brief holder=unit-0")
			expired := lineContaining(t, w.stdout, "expired a/brief holder=unit-0")
			c, e := eventRevision.FindStringSubmatch(claimed), eventRevision.FindStringSubmatch(expired)
			if c == nil || e == nil || c[1] != e[1] {
				t.Errorf("claimed %q, then expired %q: want the claim's revision in both", claimed, expired)
			}
			mustCLI(t, url, exitNotHeld, append(service, "check", "a", "brief", "unit-0")...)
			mustCLI(t, url, 0, append(service, "--timeout", "5s", "wait", "a", "brief")...)
		})
	}
}

// serviceAClient returns a client connected to url as service-a of
// docs/nats-server.example.conf; its connection ends with the test.
func serviceAClient(t *testing.T, url string) *client.Client {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo("service-a", "a-secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// claimMany claims n leases named prefix-<i> for holder in namespace ns
// through the client package as service-a of docs/nats-server.example.conf,
// 64 at a time.
func claimMany(t *testing.T, url, ns, prefix, holder string, n int) {
	t.Helper()
	c := serviceAClient(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		slots    = make(chan struct{}, 64)
	)
	for i := range n {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := c.Namespace(ns).ClaimContext(ctx, fmt.Sprintf("%s%05d", prefix, i), holder, time.Hour); err != nil {
				mu.Lock()
				firstErr = cmp.Or(firstErr, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("claim: %v", firstErr)
	}
}

// leaseRevisions returns the held leases of namespace ns with their
// revisions, read through the client package as service-a.
func leaseRevisions(t *testing.T, url, ns string) map[string]uint64 {
	t.Helper()
	c := serviceAClient(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	leases, err := c.Namespace(ns).Leases(ctx)
	if err != nil {
		t.Fatalf("leases of %s: %v", ns, err)
	}
	revisions := make(map[string]uint64, len(leases))
	for _, l := range leases {
		revisions[l.Lease] = l.Revision
	}
	return revisions
}

// TestExampleNATSConfigAgentReloadsAfterRestart stops the agent of
// docs/nats-server.example.conf and starts another agent process in its
// place, as the same user: it reads the namespace back from the bucket,
// every lease with its fencing token. The namespace is large (some 3 MB
// of records): the ordered consumer the agent reads it with stalls
// after 2 MB unless the agent answers JetStream's flow control on
// $JS.FC, which only allow_responses permits it, and the namespace would
// not be served.
func TestExampleNATSConfigAgentReloadsAfterRestart(t *testing.T) {
	const n = 4000
	url := startNATSServer(t, exampleNATSConfig(t, t.TempDir()))
	first := startExampleAgent(t, url, "agent-1")
	// Names and holders of the longest kind: each record takes about
	// 700 bytes to deliver.
	claimMany(t, url, "a", strings.Repeat("x", natskv.MaxNameBytes-5), strings.Repeat("h", natskv.MaxNameBytes), n)
	before := leaseRevisions(t, url, "a")
	if len(before) != n {
		t.Fatalf("%d leases held, want %d", len(before), n)
	}
	if code := first.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("the first agent exited with code %d after SIGTERM", code)
	}

	startExampleAgent(t, url, "agent-2")
	after := leaseRevisions(t, url, "a")
	if !maps.Equal(after, before) {
		t.Errorf("after the restart %d leases are held, want the %d held before with their revisions", len(after), len(before))
	}
}

// micro service stats of the agents, as `nats micro stats` reads them.
func agentStats(t *testing.T, url string, agents int) map[string]micro.Stats {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo(testAdmin[1], testAdmin[3]))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	inbox := nc.NewInbox()
	answers, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	subject, err := micro.ControlSubject(micro.StatsVerb, agent.ServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		t.Fatal(err)
	}
	stats := make(map[string]micro.Stats)
	for len(stats) < agents {
		m, err := answers.NextMsg(waitLimit)
		if err != nil {
			t.Fatalf("stats of %d agents of %d: %v", len(stats), agents, err)
		}
		var s micro.Stats
		if err := json.Unmarshal(m.Data, &s); err != nil {
			t.Fatalf("stats %q: %v", m.Data, err)
		}
		stats[s.Metadata[agent.MetadataAgentID]] = s
	}
	return stats
}

// TestExampleNATSConfigAgentsForwardToTheOwner runs two agents as the
// agent's user of docs/nats-server.example.conf on one bucket. agent-1
// owns namespace a; the requests for a that the queue group gives
// agent-2 (about half) are forwarded to agent-1 on _leaseagent.lease.>,
// whose answers agent-2 relays to the caller. The requests are raw, not
// retried as the client package would: a forward or relay the server
// refused would leave one unanswered.
func TestExampleNATSConfigAgentsForwardToTheOwner(t *testing.T) {
	url := startNATSServer(t, exampleNATSConfig(t, t.TempDir()))
	startExampleAgent(t, url, "agent-1")
	mustCLI(t, url, 0, append(exampleService, "claim", "a", "leader", "unit-0", "1m")...)
	startExampleAgent(t, url, "agent-2")

	nc, err := nats.Connect(url, nats.UserInfo("service-a", "a-secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ask := func(subject string, req, reply proto.Message) {
		t.Helper()
		data, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		m, err := nc.Request(subject, data, refusedWithin)
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		if err := proto.Unmarshal(m.Data, reply); err != nil {
			t.Fatalf("%s: reply %q: %v", subject, m.Data, err)
		}
	}
	const n = 32
	for i := range n {
		name := fmt.Sprintf("forwarded-%d", i)
		var claimed messages.ClaimReply
		ask("lease.claim.a", &messages.ClaimRequest{Lease: name, Holder: "unit-0", Duration: durationpb.New(time.Minute)}, &claimed)
		var checked messages.CheckReply
		ask("lease.check.a", &messages.CheckRequest{Lease: name, Holder: "unit-0"}, &checked)
		if claimed.GetStatus().GetCode() != messages.Code_CODE_OK || checked.GetStatus().GetCode() != messages.Code_CODE_OK {
			t.Fatalf("%s: claim %v, then check %v; want both OK", name, claimed.GetStatus(), checked.GetStatus())
		}
	}

	stats := agentStats(t, url, 2)
	received := 0
	for _, e := range stats["agent-2"].Endpoints {
		received += e.NumRequests
	}
	if received == 0 {
		t.Errorf("agent-2 received none of the %d requests: nothing was forwarded (stats %+v)", 2*n, stats)
	}
	if r := statusOf(t, url, exampleOperator...); namespaceRow(t, r, "a").Owner != "agent-1" {
		t.Errorf("status: namespace a owned by %q, want agent-1", namespaceRow(t, r, "a").Owner)
	}
}

// TestAgentRefusedASubjectAtStartSaysWhich runs the agent with one
// permission of docs/nats-server.example.conf taken from its user: it
// stops at start-up with exit code 2 and an error naming the refused
// subject and where the permissions are listed, rather than wait out
// --start-timeout or serve half.
func TestAgentRefusedASubjectAtStartSaysWhich(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  [2]string
		want  string // refused, in the error
		limit time.Duration
	}{
		{"the bucket's stream info", [2]string{`"$JS.API.STREAM.INFO.KV_leases",`, ""},
			`Publish to "$JS.API.STREAM.INFO.KV_leases"`, refusedWithin},
		{"the claim requests", [2]string{`"lease.claim.*", "lease.claim.*.>",`, ""},
			`Subscription to "lease.claim.*`, refusedWithin},
		// The start-up questions to other agents (which bucket, is the
		// ID taken) go unanswered then, and each waits out its 2 s. The
		// first is asked before the bucket is opened: its publish is the
		// first refused.
		{"the other agents", [2]string{`"_leaseagent.lease.>",`, ""},
			`Publish to "_leaseagent.lease.bucket"`, refusedWithin + 4*time.Second},
		{"replies", [2]string{"allow_responses: true", ""},
			`Publish to "_INBOX.`, refusedWithin + 4*time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := startNATSServer(t, exampleNATSConfig(t, t.TempDir(), tc.edit))
			begin := time.Now()
			_, stderr, code := cli(t, "", append([]string{"serve", "--nats-url", url, "--agent-id", "agent-1"}, exampleAgent...)...)
			if took := time.Since(begin); took > tc.limit {
				t.Errorf("the agent took %v to fail, want at most %v", took, tc.limit)
			}
			if code != exitUsage {
				t.Fatalf("exit code %d, want %d; stderr %q", code, exitUsage, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			last := lines[len(lines)-1]
			for _, want := range []string{"leaseagent: start the ", "Permissions Violation for " + tc.want, "The agent's own permissions"} {
				if !strings.Contains(last, want) {
					t.Errorf("last line of stderr %q lacks %q", last, want)
				}
			}
		})
	}
}

// TestAgentLogsARefusedEvent runs the agent without the permission to
// publish events: it serves, and logs an error naming the refused event
// subject.
func TestAgentLogsARefusedEvent(t *testing.T) {
	url := startNATSServer(t, exampleNATSConfig(t, t.TempDir(), [2]string{`"lease.expired.>", "lease.claimed.>",`, ""}))
	p := startExampleAgent(t, url, "agent-1")
	mustCLI(t, url, 0, append(exampleService, "claim", "a", "leader", "unit-0", "1m")...)
	line := lineContaining(t, p.stderr, "the NATS server refused the agent a subject")
	for _, want := range []string{"level=ERROR", `Publish to \"lease.claimed.a.leader\"`, "docs/security.md"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q", line, want)
		}
	}
	mustCLI(t, url, 0, append(exampleService, "check", "a", "leader", "unit-0")...)
}

// writeCreds writes a credentials file for a new user of the account
// signed by accountKP, with perms, and returns its path.
func writeCreds(t *testing.T, accountKP nkeys.KeyPair, name string, perms jwt.Permissions) string {
	t.Helper()
	ukp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	apub, _ := accountKP.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	uc.IssuerAccount = apub
	uc.Permissions = perms
	ujwt, err := uc.Encode(accountKP)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, name+".creds", string(creds))
}

// TestCredsFilesAgainstAnOperatorModeServer runs a nats-server in operator
// (JWT) mode with the agent and a service confined to namespace a in one
// account, each with a --creds file: the service's claim in a works, in b
// it is refused with exit code 2, and a user of another account reaches no
// agent at all.
func TestCredsFilesAgainstAnOperatorModeServer(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	account := func(name string, js bool) (nkeys.KeyPair, string, string) {
		akp, _ := nkeys.CreateAccount()
		apub, _ := akp.PublicKey()
		ac := jwt.NewAccountClaims(apub)
		ac.Name = name
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		ajwt, err := ac.Encode(okp)
		if err != nil {
			t.Fatal(err)
		}
		return akp, apub, ajwt
	}
	_, sysPub, sysJWT := account("SYS", false)
	leasesKP, leasesPub, leasesJWT := account("LEASES", true)
	otherKP, otherPub, otherJWT := account("OTHER", false)
	url := startNATSServer(t, fmt.Sprintf(`listen: 127.0.0.1:-1
jetstream { store_dir: %q }
operator: %s
system_account: %s
resolver: MEMORY
resolver_preload: { %s: %s, %s: %s, %s: %s }
`, t.TempDir(), ojwt, sysPub, sysPub, sysJWT, leasesPub, leasesJWT, otherPub, otherJWT))

	agentCreds := writeCreds(t, leasesKP, "agent", jwt.Permissions{})
	startAgent(t, "--nats-url", url, "--creds", agentCreds)
	service := []string{"--creds", writeCreds(t, leasesKP, "service-a", jwt.Permissions{
		Pub: jwt.Permission{Allow: jwt.StringList{"lease.*.a"}},
		Sub: jwt.Permission{Allow: jwt.StringList{"_INBOX.>", "lease.expired.a.>", "lease.claimed.a.>"}},
	})}
	stranger := []string{"--creds", writeCreds(t, otherKP, "stranger", jwt.Permissions{})}

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"service: claim in a", append(service, "claim", "a", "leader", "unit-0", "1m"), 0, ""},
		{"service: check in a", append(service, "check", "a", "leader", "unit-0"), 0, ""},
		{"service: claim in b", append(service, "claim", "b", "leader", "unit-0", "1m"), exitUsage, `Permissions Violation for Publish to "lease.claim.b"`},
		{"other account: no agent", append(stranger, "--timeout", "2s", "check", "a", "leader", "unit-0"), exitUnavailable, "no responders"},
		{"agent's creds: check", []string{"--creds", agentCreds, "check", "a", "leader", "unit-0"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := timedCLI(t, refusedWithin, url, tc.args...)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr %q", code, tc.code, stderr)
			}
			if tc.want != "" {
				checkErrorLine(t, stderr, tc.want)
			}
		})
	}
}
