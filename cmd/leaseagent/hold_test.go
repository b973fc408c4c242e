package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/embedded"
)

// hold runs its command while holding the lease; a second hold on the same
// lease waits, and runs its command only after the first has exited.
func TestHoldRunsCommandsOneAtATime(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	dir := t.TempDir()
	gate, marker := filepath.Join(dir, "gate"), filepath.Join(dir, "a-done")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	// a's command runs until the test opens and closes the gate, leaves a
	// marker, and exits 3.
	a := start(t, d.url, "hold", "ns", "job", "a", "3s", "--",
		"sh", "-c", `echo running-a; cat "$0" >/dev/null; touch "$1"; exit 3`, gate, marker)
	if line := nextLine(t, a.stdout, "a's command"); line != "running-a" {
		t.Fatalf("a printed %q", line)
	}
	if tok := token(t, d.url, "ns", "job", "a"); tok == 0 {
		t.Fatal("a holds no fencing token")
	}
	// b's command says whether a's had finished when b's started.
	b := start(t, d.url, "hold", "ns", "job", "b", "3s", "--",
		"sh", "-c", `if test -e "$0"; then echo running-b-after-a; else echo running-b-early; fi`, marker)

	mustCLI(t, d.url, 1, "check", "ns", "job", "b") // b waits: a still holds
	f, err := os.OpenFile(gate, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close() // a's command finishes

	if code := a.exitCode(t); code != 3 {
		t.Fatalf("hold a exited %d, want its command's 3", code)
	}
	exited := time.Now()
	if line := nextLine(t, b.stdout, "b's command"); line != "running-b-after-a" {
		t.Fatalf("b printed %q", line)
	}
	// a released the lease on exit: b did not wait out a's 3s.
	if waited := time.Since(exited); waited > 2*time.Second {
		t.Fatalf("b ran %v after a exited: the lease was not released", waited)
	}
	if code := b.exitCode(t); code != 0 {
		t.Fatalf("hold b exited %d, want 0", code)
	}
	if out, _ := mustCLI(t, d.url, 0, "leases", "ns"); strings.Contains(out, "job") {
		t.Fatalf("lease still held after both holds exited:\n%s", out)
	}
}

// With --timeout, hold gives up waiting for the lease: denied while
// another holds it, unavailable while no agent answers.
func TestHoldGivesUpAfterTimeout(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	mustCLI(t, d.url, 0, "claim", "ns", "job", "other", "1m")
	bare, err := embedded.Start(embedded.Config{Port: embedded.RandomPort, DataDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bare.Shutdown)
	noAgent := bare.ClientURL()
	for _, tc := range []struct {
		name, url string
		want      int
	}{
		{"lease held by another", d.url, exitNotHeld},
		{"no agent", noAgent, exitUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, stderr, code := cli(t, tc.url, "hold", "ns", "job", "a", "3s", "--timeout", "1s", "--", "echo", "ran")
			if code != tc.want || !strings.Contains(stderr, "not acquired within --timeout 1s") {
				t.Fatalf("hold with --timeout 1s: exit %d, stderr %q; want exit %d saying it was not acquired", code, stderr, tc.want)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("hold with --timeout 1s took %v", took)
			}
		})
	}
}

// A claim the agent grants just as hold gives up (its answer arrives after
// --timeout) is released: hold does not say "denied", and leaves the lease
// free for others.
func TestHoldReleasesAClaimGrantedAsItGaveUp(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	nc := connect(t, d.url)
	// Requests on prefix "slow" reach the agent at once; the answers to
	// claims come back a second late.
	if _, err := nc.Subscribe("slow.>", func(m *nats.Msg) {
		go func() {
			r, err := nc.Request("lease"+strings.TrimPrefix(m.Subject, "slow"), m.Data, 5*time.Second)
			if err != nil {
				return
			}
			if strings.HasPrefix(m.Subject, "slow.claim.") {
				time.Sleep(time.Second)
			}
			_ = m.Respond(r.Data)
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := cli(t, d.url, "hold", "--prefix", "slow", "--timeout", "300ms", "ns", "job", "a", "30s", "--", "echo", "ran")
	if code != exitUnavailable || !strings.Contains(stderr, "granted as hold gave up; released") {
		t.Fatalf("hold whose claim was granted late: exit %d, stderr %q; want exit %d saying it released the lease", code, stderr, exitUnavailable)
	}
	mustCLI(t, d.url, 0, "claim", "ns", "job", "b", "10s")
}

// A lease released in the holder's name while hold runs its command (an
// operator's `leaseagent release`) stops the command at once, not at the
// next renewal a third of the duration later, and hold says it lost the
// lease.
func TestHoldStopsItsCommandWhenTheLeaseIsReleased(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	h := start(t, d.url, "hold", "ns", "job", "a", "1m", "--",
		"sh", "-c", `trap 'echo terminated; exit 0' TERM; echo running; while :; do sleep 0.05; done`)
	if line := nextLine(t, h.stdout, "the command"); line != "running" {
		t.Fatalf("the command printed %q", line)
	}
	released := time.Now()
	mustCLI(t, d.url, 0, "release", "ns", "job", "a")
	if line := nextLine(t, h.stdout, "the command"); line != "terminated" {
		t.Fatalf("the command printed %q, want it terminated", line)
	}
	// Renewals come every 20 s: the event, not a renewal, stopped it.
	if took := time.Since(released); took > 10*time.Second {
		t.Fatalf("the command was stopped %v after the release", took)
	}
	if code := h.exitCode(t); code != exitNotHeld {
		t.Fatalf("hold exited %d, want %d (the lease was lost)", code, exitNotHeld)
	}
}

func TestHoldUsage(t *testing.T) {
	for _, args := range [][]string{
		{"hold", "ns", "job", "a", "3s"},                 // no command
		{"hold", "ns", "job", "a", "--", "true"},         // no duration
		{"hold", "ns", "job", "a", "soon", "--", "true"}, // bad duration
	} {
		if _, _, code := cli(t, "nats://127.0.0.1:1", args...); code != exitUsage {
			t.Errorf("leaseagent %s: exit %d, want %d", strings.Join(args, " "), code, exitUsage)
		}
	}
}

// A name the agent would refuse is a usage error (exit 2) naming it, and
// the command does not run.
func TestHoldRejectsBadNames(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	for _, tc := range []struct {
		name, ns, lease, holder, want string
	}{
		{"empty namespace", "", "job", "a", "invalid namespace name"},
		{"empty lease", "ns", "", "a", "invalid lease name"},
		{"empty holder", "ns", "job", "", "invalid holder name"},
		{"space in lease", "ns", "the job", "a", "invalid lease name"},
		{"dot in lease", "ns", "job.1", "a", "invalid lease name"},
		{"space in holder", "ns", "job", "host a", "invalid holder name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := cli(t, d.url, "hold", "--timeout", "5s", tc.ns, tc.lease, tc.holder, "3s", "--", "echo", "ran")
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("hold %q %q %q: exit %d, stderr %q; want %d saying %q", tc.ns, tc.lease, tc.holder, code, stderr, exitUsage, tc.want)
			}
			if stdout != "" {
				t.Errorf("hold %q %q %q ran its command: stdout %q", tc.ns, tc.lease, tc.holder, stdout)
			}
		})
	}
}

// A DURATION too short for a renewal to reach the agent in time is a usage
// error: hold would otherwise claim and release in a loop for ever, never
// running its command. The shortest allowed still runs it.
func TestHoldRejectsDurationsTooShortToRenew(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	for _, duration := range []string{"1ns", "2ns", "1us", "99ms"} {
		t.Run(duration, func(t *testing.T) {
			stdout, stderr, code := cli(t, d.url, "hold", "ns", "job", "a", duration, "--", "echo", "ran")
			if code != exitUsage || !strings.Contains(stderr, "DURATION") {
				t.Errorf("hold with DURATION %s: exit %d, stderr %q; want %d naming DURATION", duration, code, stderr, exitUsage)
			}
			if stdout != "" {
				t.Errorf("hold with DURATION %s ran its command: stdout %q", duration, stdout)
			}
		})
	}
	if stdout, stderr, code := cli(t, d.url, "hold", "ns", "job", "a", minHoldDuration.String(), "--", "echo", "ran"); code != 0 || stdout != "ran\n" {
		t.Errorf("hold with DURATION %v: exit %d, stdout %q, stderr %q; want it to run its command", minHoldDuration, code, stdout, stderr)
	}
}

// wait and hold (still waiting for its lease) stopped by a signal say
// so, and exit 128 plus the signal's number, as a shell reports a command
// the signal killed (and as hold does when it killed its command), rather
// than 0: the lease is still held by another. So does a claim whose
// answer has not come yet.
func TestCommandsStoppedBySignalsSayTheyWereInterrupted(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	mustCLI(t, d.url, 0, "claim", "ns", "job", "other", "1m")
	// Requests on prefix "mute" reach this subscriber, which never answers.
	received := make(chan *nats.Msg, 16)
	if _, err := connect(t, d.url).ChanSubscribe("mute.>", received); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		sig  syscall.Signal
		want string
	}{
		{"wait SIGTERM", []string{"wait", "ns", "job"}, syscall.SIGTERM, "wait for ns/job: interrupted: terminated signal received"},
		{"wait SIGINT", []string{"wait", "ns", "job"}, syscall.SIGINT, "wait for ns/job: interrupted: interrupt signal received"},
		{"hold SIGTERM", []string{"hold", "ns", "job", "a", "10s", "--", "echo", "ran"}, syscall.SIGTERM, "hold ns/job for a: interrupted: terminated signal received"},
		{"hold SIGINT", []string{"hold", "ns", "job", "a", "10s", "--", "echo", "ran"}, syscall.SIGINT, "hold ns/job for a: interrupted: interrupt signal received"},
		{"claim SIGINT", []string{"claim", "--prefix", "mute", "ns", "l", "h", "10s"}, syscall.SIGINT, "interrupted: interrupt signal received"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// At debug, the command says when it has connected: it
			// handles signals from before that.
			p := start(t, d.url, append([]string{"--log-level", "debug"}, tc.args...)...)
			lineContaining(t, p.stderr, "msg=connected")
			if tc.args[0] == "claim" {
				select {
				case <-received: // the claim is waiting for its answer
				case <-time.After(waitLimit):
					t.Fatal("the claim did not arrive")
				}
			}
			if code, want := p.stop(t, tc.sig), 128+int(tc.sig); code != want {
				t.Errorf("leaseagent %s after %v: exit %d, want %d", strings.Join(tc.args, " "), tc.sig, code, want)
			}
			if logs := p.logs.String(); !strings.HasSuffix(logs, tc.want+"\n") {
				t.Errorf("leaseagent %s after %v: stderr %q, want it to end with %q", strings.Join(tc.args, " "), tc.sig, logs, tc.want)
			}
		})
	}
}

// wait and hold that give up after --timeout while another holds the lease
// exit alike: 1, the "no" of a denied claim.
func TestWaitAndHoldTimeOutAlike(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	mustCLI(t, d.url, 0, "claim", "ns", "job", "other", "1m")
	for _, args := range [][]string{
		{"wait", "--timeout", "300ms", "ns", "job"},
		{"hold", "--timeout", "300ms", "ns", "job", "a", "10s", "--", "echo", "ran"},
	} {
		stdout, stderr, code := cli(t, d.url, args...)
		if code != exitNotHeld || stdout != "" {
			t.Errorf("leaseagent %s: exit %d, stdout %q, stderr %q; want %d", strings.Join(args, " "), code, stdout, stderr, exitNotHeld)
		}
		checkErrorLine(t, stderr, "300ms")
	}
}

// A command hold cannot start exits as env(1) and timeout(1) do: 127 if it
// is not found, 126 if it cannot be run. The lease is released.
func TestHoldExitsLikeEnvWhenItsCommandCannotRun(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	notExecutable := filepath.Join(t.TempDir(), "job.sh")
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\necho ran\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		command string
		want    int
	}{
		{"/nonexistent/cmd", exitNotFound},
		{"no-such-command-on-the-path", exitNotFound},
		{notExecutable, exitCannotRun},
		{t.TempDir(), exitCannotRun}, // a directory
	} {
		t.Run(filepath.Base(tc.command), func(t *testing.T) {
			_, stderr, code := cli(t, d.url, "hold", "ns", "job", "a", "10s", "--", tc.command)
			if code != tc.want {
				t.Errorf("hold -- %s: exit %d, want %d; stderr %q", tc.command, code, tc.want, stderr)
			}
			checkErrorLine(t, stderr, "run "+tc.command+": ")
			mustCLI(t, d.url, exitNotHeld, "check", "ns", "job", "a")
		})
	}
}

// A signal to hold while its command runs reaches the command as SIGTERM,
// whichever signal hold got; hold waits for it, releases the lease and
// exits with the command's status, as hold --help says.
func TestHoldPassesASignalToItsCommandAsSIGTERM(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	if !strings.Contains(runHelp(t, "hold"), "reaches CMD as SIGTERM") {
		t.Error("hold --help does not say what a signal does to CMD")
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			// The command says which signal it got, and exits 7 on
			// SIGTERM; SIGINT would end it with 130.
			p := start(t, d.url, "hold", "ns", "job", "a", "30s", "--", "bash", "-c",
				`trap 'kill $pid; echo got-TERM; exit 7' TERM; sleep 60 >/dev/null 2>&1 & pid=$!; echo ready; wait $pid`)
			if line := nextLine(t, p.stdout, "the command"); line != "ready" {
				t.Fatalf("the command printed %q", line)
			}
			if code := p.stop(t, sig); code != 7 {
				t.Errorf("hold after %v: exit %d, want the command's 7", sig, code)
			}
			if line := nextLine(t, p.stdout, "the command"); line != "got-TERM" {
				t.Errorf("the command printed %q after hold got %v, want got-TERM", line, sig)
			}
			// Released, not left to expire in 30s.
			mustCLI(t, d.url, 0, "claim", "ns", "job", "b", "1s")
			mustCLI(t, d.url, 0, "release", "ns", "job", "b")
		})
	}
}

// runHelp returns the output of `leaseagent COMMAND --help`.
func runHelp(t *testing.T, command string) string {
	t.Helper()
	stdout, stderr, code := runCLI(t, nil, command, "--help")
	if code != 0 {
		t.Fatalf("%s --help: exit %d, stderr %q", command, code, stderr)
	}
	return stdout
}
