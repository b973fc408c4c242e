package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// clusterNode is a leaseagent process in clustered embedded mode.
type clusterNode struct {
	*proc
	name    string
	url     string // client URL
	dataDir string
}

// startClusterNodes starts n leaseagents on 127.0.0.1, each with its own
// embedded NATS server, joined in one cluster with an R3 bucket, and waits
// until every one prints its ready line. Ports are picked before the
// processes start, since every node must know every route; should one be
// taken in the meantime, the whole cluster is started again.
func startClusterNodes(t *testing.T, n int) []*clusterNode {
	t.Helper()
	for attempt := 1; ; attempt++ {
		clientPorts := make([]int, n)
		routePorts := make([]int, n)
		routes := make([]string, n)
		for i := range n {
			clientPorts[i], routePorts[i] = freePort(t), freePort(t)
			routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[i])
		}
		nodes := make([]*clusterNode, n)
		for i := range n {
			name := fmt.Sprintf("node-%d", i+1)
			dir := filepath.Join(t.TempDir(), name)
			nodes[i] = &clusterNode{
				proc: start(t, "",
					"--listen", fmt.Sprintf("127.0.0.1:%d", clientPorts[i]),
					"--data-dir", dir,
					"--server-name", name,
					"--cluster-name", "e2e",
					"--cluster-listen", fmt.Sprintf("127.0.0.1:%d", routePorts[i]),
					"--routes", strings.Join(routes, ","),
					"--replicas", "3",
					"--start-timeout", waitLimit.String(),
				),
				name:    name,
				url:     fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]),
				dataDir: dir,
			}
		}
		retry := false
		deadline := time.After(waitLimit)
		for i, node := range nodes {
			select {
			case line, ok := <-node.stdout:
				if ok {
					want := fmt.Sprintf("leaseagent listening on %s (embedded, data in %s, server %s in cluster e2e, routes on %s)",
						node.url, node.dataDir, node.name, routes[i])
					if line != want {
						t.Fatalf("%s: ready line %q, want %q", node.name, line, want)
					}
					continue
				}
				code := node.exitCode(t)
				if attempt < 3 && strings.Contains(node.logs.String(), "address already in use") {
					retry = true
					break
				}
				t.Fatalf("%s exited with code %d before it was ready:\n%s", node.name, code, node.logs.String())
			case <-deadline:
				t.Fatalf("%s not ready within %v", node.name, waitLimit)
			}
			if retry {
				break
			}
		}
		if !retry {
			return nodes
		}
		for _, node := range nodes {
			_ = node.cmd.Process.Kill()
			<-node.done
		}
	}
}

// TestClusteredEmbedded runs three leaseagents in clustered embedded mode:
// the bucket is replicated on the three NATS servers, and a lease claimed
// through one node is held, with its fencing token, through the others.
//
// Until namespaces have one owner cluster-wide (issue 5), each agent
// serves every namespace; a claim on a fresh namespace followed by checks
// is still answered correctly by whichever agent receives it, since each
// loads the namespace from the bucket when first asked.
func TestClusteredEmbedded(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	nodes := startClusterNodes(t, 3)
	t.Logf("three clustered agents ready in %v", time.Since(begin).Round(time.Millisecond))

	// The bucket has three replicas, one per node, all current.
	nc := connect(t, nodes[0].url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for {
		stream, err := js.Stream(ctx, "KV_leases")
		if err != nil {
			t.Fatalf("stream KV_leases: %v", err)
		}
		info := stream.CachedInfo()
		current := 0
		for _, p := range info.Cluster.Replicas {
			if p.Current {
				current++
			}
		}
		if info.Config.Replicas == 3 && info.Cluster.Leader != "" && current == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("stream KV_leases: %d replicas, leader %q, %d current followers; want 3, a leader, 2",
				info.Config.Replicas, info.Cluster.Leader, current)
		}
		time.Sleep(50 * time.Millisecond)
	}

	mustCLI(t, nodes[0].url, 0, "claim", "smoke", "leader", "unit-0", "1m")
	tok := token(t, nodes[2].url, "smoke", "leader", "unit-0")
	if got := token(t, nodes[1].url, "smoke", "leader", "unit-0"); got != tok {
		t.Errorf("fencing token through %s = %d, through %s = %d", nodes[1].name, got, nodes[2].name, tok)
	}
	mustCLI(t, nodes[1].url, exitNotHeld, "claim", "smoke", "leader", "unit-1", "1m")
	mustCLI(t, nodes[2].url, exitNotHeld, "check", "smoke", "leader", "unit-1")

	// SIGTERM stops every node cleanly, all at once.
	for _, node := range nodes {
		if err := node.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("signal %s: %v", node.name, err)
		}
	}
	for _, node := range nodes {
		if code := node.exitCode(t); code != 0 {
			t.Errorf("%s exited with code %d after SIGTERM", node.name, code)
		}
	}
}

// An agent refused at startup (its ID is taken) says why in one line,
// naming the flag (not package agent's Config field): its own closing of
// the connection is not a disconnection to warn about.
func TestServeWithATakenAgentIDSaysOnlyThat(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	for range 3 {
		_, stderr, code := cli(t, "", "serve", "--nats-url", d.url, "--agent-id", "leaseagent")
		if code != exitOther {
			t.Fatalf("serve with a taken --agent-id: exit %d, want %d; stderr %q", code, exitOther, stderr)
		}
		checkErrorLine(t, stderr, `--agent-id: another agent already runs as "leaseagent"`)
		if strings.Contains(stderr, "Ownership") {
			t.Errorf("stderr %q names a Config field, not the flag", stderr)
		}
	}
}

// Agents answer requests on their --prefix, whatever their --bucket: an
// agent on another bucket with the same prefix would share the requests
// of the running one and grant, from its own bucket, leases the running
// one holds for someone else. It refuses to start, naming both buckets,
// and without having created its bucket; with its own --prefix it serves.
func TestServeOnAnotherBucketWithTheSamePrefix(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	tests := []struct {
		name    string
		args    []string
		refused string // "" if it serves
	}{
		{"same prefix, another bucket", []string{"--bucket", "other"},
			`agents on prefix "lease" already use bucket "leases", not "other"`},
		{"another prefix, another bucket", []string{"--bucket", "other", "--prefix", "other"}, ""},
		{"same prefix, same bucket", []string{"--agent-id", "second"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"serve", "--nats-url", d.url, "--agent-id", "second"}, tt.args...)
			if tt.refused != "" {
				_, stderr, code := cli(t, "", args...)
				if code != exitOther {
					t.Fatalf("serve %v: exit %d, want %d; stderr %q", tt.args, code, exitOther, stderr)
				}
				checkErrorLine(t, stderr, tt.refused)
				js, err := jetstream.New(connect(t, d.url))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := js.Stream(context.Background(), "KV_other"); !errors.Is(err, jetstream.ErrStreamNotFound) {
					t.Fatalf("after the refusal, stream KV_other: %v, want it not created", err)
				}
				return
			}
			p := start(t, "", args[1:]...)
			if line := nextLine(t, p.stdout, "ready line"); !strings.HasPrefix(line, "leaseagent listening on ") {
				t.Fatalf("serve %v: first line %q, want the ready line", tt.args, line)
			}
			if code := p.stop(t, syscall.SIGTERM); code != 0 {
				t.Fatalf("serve %v: exit %d after SIGTERM", tt.args, code)
			}
		})
	}
}
