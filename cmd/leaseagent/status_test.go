package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/natskv"
)

// statusOf runs `leaseagent status --json` against natsURL and returns what
// it printed.
func statusOf(t *testing.T, natsURL string, args ...string) *statusReport {
	t.Helper()
	return statusWithCode(t, natsURL, 0, args...)
}

// statusWithCode is statusOf for a status that exits code.
func statusWithCode(t *testing.T, natsURL string, code int, args ...string) *statusReport {
	t.Helper()
	out, _ := mustCLI(t, natsURL, code, append([]string{"status", "--json"}, args...)...)
	var r statusReport
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("status --json printed %q: %v", out, err)
	}
	return &r
}

// namespaceRow returns the namespace named ns of r, failing the test if
// there is none.
func namespaceRow(t *testing.T, r *statusReport, ns string) statusNamespace {
	t.Helper()
	for _, n := range r.Namespaces {
		if n.Name == ns {
			return n
		}
	}
	t.Fatalf("status lists no namespace %q: %+v", ns, r.Namespaces)
	return statusNamespace{}
}

// textRows returns the rows of the table of text whose header row starts
// with header, each split into fields.
func textRows(t *testing.T, text, header string) [][]string {
	t.Helper()
	lines := strings.Split(text, "\n")
	at := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, header+" ") })
	if at < 0 {
		t.Fatalf("status printed no table %s:\n%s", header, text)
	}
	var rows [][]string
	for _, l := range lines[at+1:] {
		if l == "" {
			break
		}
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

// TestStatusSingle runs status against one embedded agent: the agent owns
// the namespaces claimed through it, the counts are right, an owner no
// agent answers for is gone, and leases without an owner are listed.
func TestStatusSingle(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir())
	mustCLI(t, d.url, 0, "claim", "alpha", "a", "h", "1m")
	mustCLI(t, d.url, 0, "claim", "alpha", "b/1", "h", "1m")
	mustCLI(t, d.url, 0, "claim", "beta", "c", "h", "1m")
	mustCLI(t, d.url, 0, "claim", "beta", "gone", "h", "1m")
	mustCLI(t, d.url, 0, "release", "beta", "gone", "h")

	// Written straight to the bucket: an ownership lease of an agent that
	// is not running, and a lease in a namespace nobody owns.
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	js, err := jetstream.New(connect(t, d.url))
	if err != nil {
		t.Fatal(err)
	}
	b, err := natskv.OpenBucket(ctx, natskv.BucketConfig{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct{ ns, lease, holder string }{
		{agent.OwnersNamespace, "ghostly", "ghost-agent"},
		{"orphan", "l", "h"},
	} {
		c, err := natskv.NewClient(natskv.Config{Bucket: b, Namespace: w.ns})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.ClaimLeaseContext(ctx, w.lease, lease.Request{Holder: w.holder, Duration: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}

	begin := time.Now()
	r := statusOf(t, d.url)
	took := time.Since(begin)
	if r.NATS.Name != "leaseagent" || r.NATS.Cluster != "" || r.NATS.URL != d.url || r.NATS.Version == "" {
		t.Errorf("status nats = %+v, want server leaseagent at %s, no cluster", r.NATS, d.url)
	}
	wantPeers := []statusPeer{{Name: "leaseagent", Leader: true, Current: true}}
	if r.Bucket.Name != "leases" || r.Bucket.Stream != "KV_leases" || r.Bucket.Replicas != 1 ||
		r.Bucket.Leader != "leaseagent" || !slices.Equal(r.Bucket.Peers, wantPeers) {
		t.Errorf("status bucket = %+v, want leases (KV_leases), 1 replica led by leaseagent", r.Bucket)
	}
	if len(r.Agents) != 1 {
		t.Fatalf("status agents = %+v, want 1", r.Agents)
	}
	if a := r.Agents[0]; a.ID != "leaseagent" || a.Version != version || a.Instance == "" || !slices.Equal(a.Owns, []string{"alpha", "beta"}) {
		t.Errorf("status agent = %+v, want leaseagent %s owning alpha and beta", a, version)
	}
	wantNS := []statusNamespace{
		{Name: "alpha", Owner: "leaseagent", OwnerLive: true, Leases: 2},
		{Name: "beta", Owner: "leaseagent", OwnerLive: true, Leases: 1},
		{Name: "ghostly", Owner: "ghost-agent", Leases: 0},
		{Name: "orphan", Leases: 1},
	}
	if !slices.Equal(r.Namespaces, wantNS) {
		t.Errorf("status namespaces = %+v, want %+v", r.Namespaces, wantNS)
	}
	if took > 5*time.Second {
		t.Errorf("status took %v", took)
	}

	// The same as text.
	out, _ := mustCLI(t, d.url, 0, "status")
	t.Logf("leaseagent status:\n%s", out)
	if !regexp.MustCompile(`(?m)^NATS server: +leaseagent \(single server, not clustered\), `+regexp.QuoteMeta(d.url)+`, version \S+$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^Bucket: +leases \(stream KV_leases\), 1 replica, leader leaseagent$`).MatchString(out) {
		t.Errorf("status header:\n%s", out)
	}
	if rows := textRows(t, out, "NODE"); !slices.EqualFunc(rows, [][]string{{"leaseagent", "leader", "yes", "-", "-"}}, slices.Equal) {
		t.Errorf("status nodes %q", rows)
	}
	if rows := textRows(t, out, "AGENT"); len(rows) != 1 || !slices.Equal(rows[0], []string{"leaseagent", version, r.Agents[0].Instance, "alpha,beta"}) {
		t.Errorf("status agents %q", rows)
	}
	wantRows := [][]string{{"alpha", "leaseagent", "2"}, {"beta", "leaseagent", "1"}, {"ghostly", "ghost-agent", "(gone)", "0"}, {"orphan", "-", "1"}}
	if rows := textRows(t, out, "NAMESPACE"); !slices.EqualFunc(rows, wantRows, slices.Equal) {
		t.Errorf("status namespaces %q, want %q", rows, wantRows)
	}

	// A bucket that does not exist is an error, and status does not
	// create it.
	_, stderr := mustCLI(t, d.url, exitUnavailable, "status", "--bucket", "nope")
	checkErrorLine(t, stderr, `bucket "nope" not found`)
	if _, err := js.KeyValue(ctx, "nope"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("after status --bucket nope: %v, want ErrBucketNotFound", err)
	}
	mustCLI(t, d.url, exitUsage, "status", "extra")
	mustCLI(t, d.url, exitUsage, "status", "--bucket", "a.b")
}

// A status that no agent answers exits 3 (unavailable), and says so
// plainly, pointing at --prefix: a health check must not pass because
// status could read the bucket. It still prints what it found.
func TestStatusWithNoAgentAnsweringFails(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, t.TempDir())
	mustCLI(t, d.url, 0, "claim", "alpha", "a", "h", "1m")

	out, stderr := mustCLI(t, d.url, exitUnavailable, "status", "--prefix", "other")
	checkErrorLine(t, stderr, `no agent answered on prefix "other" within --discovery-wait 500ms`)
	checkErrorLine(t, stderr, "check --prefix and --bucket")
	if !regexp.MustCompile(`(?m)^Agents: +none answered on prefix "other" within 500ms: none is running, or --prefix is not theirs$`).MatchString(out) {
		t.Errorf("status --prefix other printed:\n%s", out)
	}
	if rows := textRows(t, out, "NAMESPACE"); !slices.EqualFunc(rows, [][]string{{"alpha", "leaseagent", "(gone)", "1"}}, slices.Equal) {
		t.Errorf("status --prefix other: namespaces %q", rows)
	}

	r := statusWithCode(t, d.url, exitUnavailable, "--prefix", "other")
	if len(r.Agents) != 0 || len(r.Namespaces) != 1 {
		t.Errorf("status --json --prefix other: %+v, want no agent and namespace alpha", r)
	}
	// On the agent's own prefix it answers.
	if r := statusOf(t, d.url); len(r.Agents) != 1 {
		t.Errorf("status: agents %+v, want the daemon", r.Agents)
	}
}

func TestStatusUnavailable(t *testing.T) {
	t.Parallel()
	url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	_, stderr := mustCLI(t, url, exitUnavailable, "status")
	checkErrorLine(t, stderr, "no servers available")
}

// TestStatusCluster runs status against three clustered agents: three
// copies of the bucket, one leader, every agent, and the owner of a
// namespace claimed through node 1 (whichever agent took it), whichever
// node status asks.
func TestStatusCluster(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	nodes := startClusterNodes(t, 3)
	t.Logf("three clustered agents ready in %v", time.Since(begin).Round(time.Millisecond))
	mustCLI(t, nodes[0].url, 0, "claim", "clustered", "leader", "unit-0", "1m")
	mustCLI(t, nodes[0].url, 0, "claim", "clustered", "cron", "unit-0", "1m")
	// The agent that took the namespace says so in its log.
	owner := ""
	for _, node := range nodes {
		if strings.Contains(node.logs.String(), `msg="owning namespace" component=agent agent=`+node.name+" namespace=clustered") {
			if owner != "" {
				t.Fatalf("both %s and %s logged that they own namespace clustered", owner, node.name)
			}
			owner = node.name
		}
	}
	if owner == "" {
		t.Fatal("no agent logged that it owns namespace clustered")
	}

	// Right after the cluster forms a follower may not be current yet.
	var r *statusReport
	deadline := time.Now().Add(waitLimit)
	for {
		// A status that no agent has answered yet exits 3.
		out, stderr, code := cli(t, nodes[2].url, "status", "--json", "--discovery-wait", "300ms")
		r = &statusReport{}
		if err := json.Unmarshal([]byte(out), r); err != nil {
			t.Fatalf("status --json printed %q: %v", out, err)
		}
		current := 0
		for _, p := range r.Bucket.Peers {
			if p.Current {
				current++
			}
		}
		if current == 3 && len(r.Agents) == 3 {
			if code != 0 {
				t.Fatalf("status with every agent answering: exit %d, stderr %q; want 0", code, stderr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after %v: %d of 3 peers current, %d of 3 agents: %+v", waitLimit, current, len(r.Agents), r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.NATS.Name != "node-3" || r.NATS.Cluster != "e2e" {
		t.Errorf("status nats = %+v, want node-3 in cluster e2e", r.NATS)
	}
	if r.Bucket.Replicas != 3 || len(r.Bucket.Peers) != 3 {
		t.Fatalf("status bucket = %+v, want 3 replicas and 3 peers", r.Bucket)
	}
	leaders := 0
	for i, p := range r.Bucket.Peers {
		if want := fmt.Sprintf("node-%d", i+1); p.Name != want {
			t.Errorf("peer %d is %q, want %s", i, p.Name, want)
		}
		if p.Leader {
			leaders++
			if p.Name != r.Bucket.Leader {
				t.Errorf("peer %s leads, but the bucket's leader is %q", p.Name, r.Bucket.Leader)
			}
		}
		if p.Offline {
			t.Errorf("peer %s offline", p.Name)
		}
	}
	if leaders != 1 {
		t.Errorf("%d leaders among the peers, want 1: %+v", leaders, r.Bucket.Peers)
	}
	var ids []string
	for _, a := range r.Agents {
		ids = append(ids, a.ID)
		if owns := slices.Contains(a.Owns, "clustered"); owns != (a.ID == owner) {
			t.Errorf("agent %s owns %v; the owner of namespace clustered is %s", a.ID, a.Owns, owner)
		}
	}
	if !slices.Equal(ids, []string{"node-1", "node-2", "node-3"}) {
		t.Errorf("status agents %v, want node-1, node-2, node-3", ids)
	}
	if ns := namespaceRow(t, r, "clustered"); ns.Owner != owner || !ns.OwnerLive || ns.Leases != 2 {
		t.Errorf("namespace clustered: %+v, want owned by live %s with 2 leases", ns, owner)
	}

	// The text form, through node 2.
	out, _ := mustCLI(t, nodes[1].url, 0, "status")
	t.Logf("leaseagent status:\n%s", out)
	if !regexp.MustCompile(`(?m)^NATS server: +node-2 in cluster e2e, `).MatchString(out) ||
		!regexp.MustCompile(`(?m)^Bucket: +leases \(stream KV_leases\), 3 replicas, leader node-[123]$`).MatchString(out) {
		t.Errorf("status header:\n%s", out)
	}
	nodeRows := textRows(t, out, "NODE")
	roles := map[string]int{}
	for _, row := range nodeRows {
		if len(row) != 5 {
			t.Fatalf("status node row %q", row)
		}
		roles[row[1]]++
	}
	if len(nodeRows) != 3 || roles["leader"] != 1 || roles["follower"] != 2 {
		t.Errorf("status nodes %q, want a leader and 2 followers", nodeRows)
	}
	if rows := textRows(t, out, "NAMESPACE"); !slices.EqualFunc(rows, [][]string{{"clustered", owner, "2"}}, slices.Equal) {
		t.Errorf("status namespaces %q", rows)
	}
}

// A stream leader elected after a follower died has never heard from it:
// NATS reports its activity as 0, which must not read as "heard just now".
func TestStatusNodeRow(t *testing.T) {
	tests := []struct {
		name string
		peer statusPeer
		want string // the row's fields after NODE
	}{
		{"leader", statusPeer{Name: "n", Leader: true, Current: true}, "leader yes - -"},
		{"current follower", statusPeer{Name: "n", Current: true, ActiveMS: 250}, "follower yes 250ms 0"},
		{"lagging follower", statusPeer{Name: "n", ActiveMS: 12000, Lag: 7}, "follower no 12s 7"},
		{"offline follower", statusPeer{Name: "n", Offline: true, ActiveMS: 95000, Lag: 3}, "follower offline 1m35s 3"},
		{"follower never heard from", statusPeer{Name: "n", Lag: 148}, "follower no never 148"},
		{"offline follower never heard from", statusPeer{Name: "n", Offline: true}, "follower offline never 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			r := &statusReport{Bucket: statusBucket{Name: "leases", Stream: "KV_leases", Replicas: 3, Leader: "l", Peers: []statusPeer{tt.peer}}}
			if err := writeStatus(&out, r); err != nil {
				t.Fatal(err)
			}
			var row string
			for line := range strings.Lines(out.String()) {
				if f := strings.Fields(line); len(f) > 0 && f[0] == "n" {
					row = strings.Join(f[1:], " ")
				}
			}
			if row != tt.want {
				t.Errorf("node row %q, want %q; status:\n%s", row, tt.want, out.String())
			}
		})
	}
}

// status --json writes names as they are: '>', '<' and '&' (which names
// may hold) are not escaped for HTML.
func TestStatusJSONDoesNotEscapeHTML(t *testing.T) {
	r := &statusReport{
		Agents:     []statusAgent{{ID: "a", Owns: []string{"x>y"}}},
		Namespaces: []statusNamespace{{Name: "x>y", Owner: "a", OwnerLive: true, Leases: 1}, {Name: "<&>"}},
	}
	var out strings.Builder
	if err := writeStatusJSON(&out, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"name": "x>y"`) || !strings.Contains(out.String(), `"name": "<&>"`) || strings.Contains(out.String(), `\u00`) {
		t.Errorf("status --json wrote:\n%s", out.String())
	}
	var back statusReport
	if err := json.Unmarshal([]byte(out.String()), &back); err != nil || back.Namespaces[1].Name != "<&>" {
		t.Errorf("status --json does not read back: %v, %+v", err, back.Namespaces)
	}
}
