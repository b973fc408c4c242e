package client_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/client"
)

// A test binary started with candidateEnv set is not a test run but a
// candidate process for TestKilledLeaderIsReplaced: it runs for leadership
// and reports on stdout, as "renewed <until>" and "started <now>" lines
// (Unix nanoseconds), until it is killed.
const candidateEnv = "LEASEAGENT_TEST_CANDIDATE"

func TestMain(m *testing.M) {
	if url := os.Getenv(candidateEnv); url != "" {
		os.Exit(runCandidate(url, os.Getenv("LEASEAGENT_TEST_HOLDER")))
	}
	os.Exit(m.Run())
}

func runCandidate(url, holder string) int {
	nc, err := nats.Connect(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := client.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	err = c.Namespace("ns").Elect(context.Background(), client.Election{
		Lease: "leader", Holder: holder, Duration: candidateLease,
		Run: func(ctx context.Context) {
			fmt.Printf("started %d\n", time.Now().UnixNano())
			<-ctx.Done()
		},
		OnRenewed: func(until time.Time) { fmt.Printf("renewed %d\n", until.UnixNano()) },
	})
	fmt.Fprintln(os.Stderr, err)
	return 1
}

const candidateLease = time.Second

// candidate is a running candidate process and what it has said.
type candidate struct {
	cmd   *exec.Cmd
	lines chan string
}

func startCandidate(t *testing.T, url, holder string) *candidate {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), candidateEnv+"="+url, "LEASEAGENT_TEST_HOLDER="+holder)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &candidate{cmd: cmd, lines: make(chan string, 1000)}
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			c.lines <- s.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return c
}

// parse splits a "word nanos" line.
func parse(t *testing.T, line string) (string, time.Time) {
	t.Helper()
	word, nanos, ok := strings.Cut(line, " ")
	n, err := strconv.ParseInt(nanos, 10, 64)
	if !ok || err != nil {
		t.Fatalf("candidate said %q", line)
	}
	return word, time.Unix(0, n)
}

func TestKilledLeaderIsReplaced(t *testing.T) {
	e := realTimeAgent(t)
	a, b := startCandidate(t, e.Server.ClientURL(), "a"), startCandidate(t, e.Server.ClientURL(), "b")

	// Whoever starts first leads; the other must be following.
	var leader, follower *candidate
	var lastUntil time.Time
	for leader == nil {
		select {
		case line := <-a.lines:
			if word, at := parse(t, line); word == "renewed" {
				lastUntil = at
			} else {
				leader, follower = a, b
			}
		case line := <-b.lines:
			if word, at := parse(t, line); word == "renewed" {
				lastUntil = at
			} else {
				leader, follower = b, a
			}
		case <-time.After(10 * time.Second):
			t.Fatal("nobody leads")
		}
	}
	// Let it renew a few times, then kill it without warning.
	for renewals := 0; renewals < 3; {
		line := <-leader.lines
		if word, at := parse(t, line); word == "renewed" {
			lastUntil, renewals = at, renewals+1
		}
	}
	if err := leader.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for line := range leader.lines { // what it said before it died
		if word, at := parse(t, line); word == "renewed" && at.After(lastUntil) {
			lastUntil = at
		}
	}
	for {
		select {
		case line := <-follower.lines:
			word, at := parse(t, line)
			if word != "started" {
				continue
			}
			if at.Before(lastUntil) {
				t.Fatalf("new leader started at %v, before the old leader's guarantee ran out at %v", at, lastUntil)
			}
			if took := at.Sub(killed); took > candidateLease+2*time.Second {
				t.Fatalf("takeover took %v after the kill", took)
			}
			return
		case <-time.After(candidateLease + 10*time.Second):
			t.Fatal("the follower never took over")
		}
	}
}
