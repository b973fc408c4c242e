package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/natskv"
)

// clusterDuration is how long TestClusterChaos runs the workload.
const clusterDuration = 20 * time.Second

// startCluster starts three clustered agents for a test; they are killed
// when it ends, and their logs shown if it failed.
func startCluster(t *testing.T) *Cluster {
	t.Helper()
	c, err := StartCluster(ClusterConfig{Bin: agentBinary(t, ""), Dir: t.TempDir(), Env: agentEnv()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("the nodes' logs end:\n%s", c.LogTail(30))
		}
	})
	return c
}

// nodeClient returns a lease client connected to the given nodes only, in
// order (first the first).
func nodeClient(t *testing.T, c *Cluster, nodes ...int) *client.Client {
	t.Helper()
	var urls []string
	for _, n := range nodes {
		urls = append(urls, c.URLs()[n])
	}
	return urlClient(t, strings.Join(urls, ","))
}

// urlClient returns a lease client connected to the servers of url only,
// in order, that retries quickly.
func urlClient(t *testing.T, url string) *client.Client {
	t.Helper()
	nc, err := nats.Connect(url, nats.DontRandomize(), nats.IgnoreDiscoveredServers(),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	lc, err := client.New(nc, client.WithRequestTimeout(2*time.Second), client.WithRetry(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return lc
}

func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// token checks that holder holds the lease and returns its fencing token.
func token(t *testing.T, ctx context.Context, n *client.Namespace, name, holder string) uint64 {
	t.Helper()
	var f natskv.Fence
	if err := n.Token(name, holder).(*client.Token).CheckContext(ctx, &f); err != nil {
		t.Fatalf("check %s holds %s: %v", holder, name, err)
	}
	return f.Revision
}

func TestClusterAnswersAlikeWhicheverNodeAClientUses(t *testing.T) {
	c := startCluster(t)
	ctx := within(t, time.Minute)
	var ns [3]*client.Namespace
	for i := range ns {
		ns[i] = nodeClient(t, c, i).Namespace("ns")
	}
	if err := ns[0].ClaimContext(ctx, "l", "h0", time.Minute); err != nil {
		t.Fatal(err)
	}
	want := token(t, ctx, ns[0], "l", "h0")
	for i := range ns {
		if got := token(t, ctx, ns[i], "l", "h0"); got != want {
			t.Errorf("node %d: token %d, want %d", i, got, want)
		}
		if err := ns[i].ClaimContext(ctx, "l", fmt.Sprint("other", i), time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
			t.Errorf("node %d: claim by another holder = %v, want ErrClaimDenied", i, err)
		}
		leases, err := ns[i].Leases(ctx)
		if err != nil || len(leases) != 1 || leases[0].Holder != "h0" || leases[0].Revision != want {
			t.Errorf("node %d: leases %+v, %v; want l held by h0 with token %d", i, leases, err, want)
		}
	}
	// A waiter on node 2 wakes when a holder on node 1 releases.
	woke := make(chan error, 1)
	go func() { woke <- ns[2].WaitUntilExpiredContext(ctx, "l") }()
	if err := ns[1].ClaimContext(ctx, "m", "h1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := ns[0].Release(ctx, "l", "h0"); err != nil {
		t.Fatal(err)
	}
	if err := <-woke; err != nil {
		t.Fatalf("wait through node 2 after a release through node 0: %v", err)
	}
	if err := ns[1].ClaimContext(ctx, "l", "h1", time.Minute); err != nil {
		t.Fatalf("claim through node 1 after the release: %v", err)
	}
	if got := token(t, ctx, ns[2], "l", "h1"); got <= want {
		t.Fatalf("token of the next holder %d, want more than %d", got, want)
	}
}

// The owner killed here does not lead the bucket's stream: what is timed
// is the takeover, not the stream's leader election, which
// TestClusterKeepsWritingWhenTheStreamLeaderDies covers.
func TestClusterTakesOverFromAKilledOwner(t *testing.T) {
	c := startCluster(t)
	ctx := within(t, time.Minute)
	leader, err := c.StreamLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Which agent takes a namespace is up to the queue group: try
	// namespaces until one is owned by a node that is not the leader.
	var (
		ns    string
		owner int
	)
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("20 namespaces, all owned by the stream leader node-%d", leader)
		}
		ns = fmt.Sprint("ns", i)
		if err := nodeClient(t, c, 0, 1, 2).Namespace(ns).ClaimContext(ctx, "l", "h", time.Hour); err != nil {
			t.Fatal(err)
		}
		if owner, err = c.Owner(ctx, ns); err != nil {
			t.Fatal(err)
		}
		if owner != leader {
			break
		}
	}
	all := nodeClient(t, c, 0, 1, 2).Namespace(ns)
	before := token(t, ctx, all, "l", "h")
	other := (owner + 1) % len(c.Nodes)
	n := nodeClient(t, c, other).Namespace(ns)
	waiter := nodeClient(t, c, (owner+2)%len(c.Nodes)).Namespace(ns)
	if err := n.ClaimContext(ctx, "w", "h", time.Hour); err != nil {
		t.Fatal(err)
	}
	woke := make(chan error, 1)
	go func() { woke <- waiter.WaitUntilExpiredContext(ctx, "w") }()

	killed := time.Now()
	if err := c.Nodes[owner].Kill(); err != nil {
		t.Fatal(err)
	}
	// The first answer through another node comes from the new owner.
	if got := token(t, ctx, n, "l", "h"); got != before {
		t.Fatalf("token after the takeover %d, want %d", got, before)
	}
	took := time.Since(killed)
	t.Logf("node-%d killed; node-%d answered for its namespace %v later (ownership lasts %v)", owner, other, took.Round(time.Millisecond), c.OwnershipDuration)
	// The namespace may go unserved for an ownership duration (plus the
	// drift margin) after the owner's last renewal, which came at most a
	// renewal interval before the kill; retries and the new owner's load
	// add a little, and more if the killed node led JetStream's meta
	// group: loading opens a consumer, which waits for a new meta leader,
	// elected 4-9 s after the old one goes quiet (8-15 s seen here).
	// Generous, for a loaded machine: a missing takeover would hang
	// until ctx ends instead.
	if bound := c.OwnershipDuration*11/10 + 25*time.Second; took > bound {
		t.Errorf("takeover took %v, more than %v", took, bound)
	}
	if err := n.ClaimContext(ctx, "l", "thief", time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
		t.Fatalf("claim by another holder after the takeover = %v, want ErrClaimDenied", err)
	}
	if err := n.Release(ctx, "w", "h"); err != nil {
		t.Fatal(err)
	}
	if err := <-woke; err != nil {
		t.Fatalf("waiter across the takeover: %v", err)
	}
}

func TestClusterKeepsWritingWhenTheStreamLeaderDies(t *testing.T) {
	c := startCluster(t)
	ctx := within(t, 2*time.Minute)
	leader, err := c.StreamLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var others []int
	for i := range c.Nodes {
		if i != leader {
			others = append(others, i)
		}
	}
	n := nodeClient(t, c, others...).Namespace("ns")
	acked := map[string]uint64{}
	claim := func(name string) {
		if err := n.ClaimContext(ctx, name, "h-"+name, time.Hour); err != nil {
			t.Fatalf("claim %s: %v", name, err)
		}
		acked[name] = token(t, ctx, n, name, "h-"+name)
	}
	for i := range 10 {
		claim(fmt.Sprint("before-", i))
	}
	if err := c.Nodes[leader].Kill(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		claim(fmt.Sprint("after-", i))
	}
	if err := c.Nodes[leader].Restart(); err != nil {
		t.Fatal(err)
	}
	back := nodeClient(t, c, leader).Namespace("ns")
	for name, tok := range acked {
		if got := token(t, ctx, back, name, "h-"+name); got != tok {
			t.Errorf("%s: token %d after the leader came back, want %d", name, got, tok)
		}
	}
}

func TestClusterRestartKeepsEveryLease(t *testing.T) {
	c := startCluster(t)
	ctx := within(t, 2*time.Minute)
	n := nodeClient(t, c, 0, 1, 2).Namespace("ns")
	tokens := map[string]uint64{}
	for i := range 10 {
		name := fmt.Sprint("l", i)
		if err := n.ClaimContext(ctx, name, "h-"+name, time.Hour); err != nil {
			t.Fatal(err)
		}
		tokens[name] = token(t, ctx, n, name, "h-"+name)
	}
	if err := c.Each(func(_ int, a *Agent) error { return a.Stop() }); err != nil {
		t.Fatal(err)
	}
	if err := c.Each(func(_ int, a *Agent) error { return a.Restart() }); err != nil {
		t.Fatal(err)
	}
	for name, tok := range tokens {
		if got := token(t, ctx, n, name, "h-"+name); got != tok {
			t.Errorf("%s: token %d after the restart, want %d", name, got, tok)
		}
		if err := n.ClaimContext(ctx, name, "thief", time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
			t.Errorf("%s: claim by another holder after the restart = %v, want ErrClaimDenied", name, err)
		}
	}
}

// TestClusterChaos runs the history checker's workload against three
// clustered agents, clients spread over the nodes, while nodes are killed
// and paused; it ends by killing every node at once and restarting the
// cluster. It runs for clusterDuration, or -chaos.duration if set.
func TestClusterChaos(t *testing.T) {
	d := clusterDuration
	if *chaosDuration > 0 {
		d = *chaosDuration
	}
	seed, ok := replaySeed(t)
	if !ok {
		seed = rand.Uint64()
	}
	t.Logf("seed %d; replay it with CHAOS_SEED=%d go test -race -run TestClusterChaos ./test/chaos", seed, seed)
	c := startCluster(t)
	cfg := RunConfig{Cluster: c, Seed: seed, Duration: d, Faults: true, Logf: t.Logf}
	ctx, cancel := context.WithTimeout(context.Background(), d+3*time.Minute)
	defer cancel()
	h, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	rep := Check(h, cfg.CheckConfig())
	t.Logf("seed %d: %s", seed, rep.Stats)
	requireNoViolations(t, rep)
	if rep.Stats.Faults == 0 {
		t.Errorf("no fault injected in %v", d)
	}
	if rep.Stats.WaitsBoundChecked == 0 {
		t.Errorf("no wait held to its bound: %s", rep.Stats)
	}
	if rep.Stats.ClaimsOK < 20 || rep.Stats.HolderChanges < 5 {
		t.Errorf("too little happened to mean anything: %s", rep.Stats)
	}
}

// startNATSCluster starts three clustered nats-servers with JetStream in
// this process, on random ports, and waits until they have a meta leader.
func startNATSCluster(t *testing.T) []*embedded.Server {
	t.Helper()
	routeAddrs, err := freeAddrs(3)
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, a := range routeAddrs {
		routes = append(routes, "nats-route://"+a)
	}
	servers := make([]*embedded.Server, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() {
			host, port, _ := net.SplitHostPort(routeAddrs[i])
			p, _ := strconv.Atoi(port)
			servers[i], errs[i] = embedded.Start(embedded.Config{
				Name: fmt.Sprintf("nats-%d", i), Port: embedded.RandomPort, DataDir: t.TempDir(), NoSync: true,
				Cluster: embedded.Cluster{Name: "external", Host: host, Port: p, Routes: routes},
			})
		})
	}
	wg.Wait()
	for i, s := range servers {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		t.Cleanup(s.Shutdown)
	}
	// nats-server offers no event for a meta leader's election: poll.
	deadline := time.Now().Add(30 * time.Second)
	for !slices.ContainsFunc(servers, func(s *embedded.Server) bool { return s.NATSServer().JetStreamIsLeader() }) {
		if time.Now().After(deadline) {
			t.Fatal("no JetStream meta leader within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return servers
}

// Agents on an existing NATS cluster (external mode), each connected to
// its own node: they share the namespaces as clustered embedded agents do.
func TestExternalModeAgentsOnANATSCluster(t *testing.T) {
	servers := startNATSCluster(t)
	bin := agentBinary(t, "")
	dir := t.TempDir()
	agents := make([]*Agent, len(servers))
	for i, s := range servers {
		a, err := StartExternalAgent(bin, s.ClientURL(), filepath.Join(dir, fmt.Sprint("agent", i, ".log")), agentEnv(),
			"--agent-id", fmt.Sprint("agent-", i), "--replicas", "3", "--ownership-duration", "2s")
		if err != nil {
			t.Fatal(err)
		}
		agents[i] = a
		t.Cleanup(func() {
			a.Close()
			if t.Failed() {
				t.Logf("agent-%d's log ends:\n%s", i, a.LogTail(30))
			}
		})
	}
	ctx := within(t, time.Minute)
	n0, n2 := urlClient(t, servers[0].ClientURL()).Namespace("ns"), urlClient(t, servers[2].ClientURL()).Namespace("ns")
	if err := n0.ClaimContext(ctx, "l", "h", time.Hour); err != nil {
		t.Fatal(err)
	}
	want := token(t, ctx, n0, "l", "h")
	if got := token(t, ctx, n2, "l", "h"); got != want {
		t.Fatalf("token through node 2: %d, want %d", got, want)
	}
	if err := n2.ClaimContext(ctx, "l", "thief", time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
		t.Fatalf("claim by another holder through node 2 = %v, want ErrClaimDenied", err)
	}
	observer, err := nats.Connect(servers[1].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(observer.Close)
	owner, err := OwnerID(ctx, observer, "ns")
	if err != nil {
		t.Fatal(err)
	}
	var i int
	if _, err := fmt.Sscanf(owner, "agent-%d", &i); err != nil || i < 0 || i >= len(agents) {
		t.Fatalf("namespace owned by %q, which is none of the agents", owner)
	}
	if err := agents[i].Kill(); err != nil {
		t.Fatal(err)
	}
	// Its NATS node lives on; the other agents take the namespace over.
	if got := token(t, ctx, n0, "l", "h"); got != want {
		t.Fatalf("token after %s was killed: %d, want %d", owner, got, want)
	}
	if now, err := OwnerID(ctx, observer, "ns"); err != nil || now == owner {
		t.Fatalf("owner after %s was killed: %q, %v", owner, now, err)
	}
}
