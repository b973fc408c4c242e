package agent_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/clock/clocktest"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/policy"
	"github.com/leaseagent/lease/protocol"
)

// ownershipDuration is the agents' ownership lease in these tests; their
// fake clock moves only when a test says.
const ownershipDuration = 10 * time.Second

// sharedAgent is one of several agents sharing a bucket.
type sharedAgent struct {
	id  string
	nc  *nats.Conn
	mgr *actors.Manager
	svc *agent.Service
}

// die cuts agent a off from NATS as a crash would, without releasing
// anything, and returns once the server has dropped a's subscriptions. A
// bare Close returns before the server notices, and a request sent in
// that window would still be routed to a and never answered.
func (a *sharedAgent) die(t *testing.T) {
	t.Helper()
	closed := make(chan struct{})
	a.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	// Drain unsubscribes and flushes before it closes: once closed, the
	// server has processed every unsubscription.
	if err := a.nc.Drain(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(patience):
		t.Fatalf("agent %s's connection did not close", a.id)
	}
}

// startServer starts an embedded NATS server for several agents.
func startServer(t *testing.T) *embedded.Server {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// startShared starts an agent with ownership on srv, on clock clk.
func startShared(t *testing.T, srv *embedded.Server, clk *clocktest.Fake, id string) *sharedAgent {
	t.Helper()
	nc := connect(t, srv)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("agent", id)
	}
	mgr, err := actors.New(context.Background(), actors.Config{Conn: nc, Clock: clk, MaxSleep: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Stop(context.Background()) })
	svc, err := agent.Start(agent.Config{
		Conn: nc, Manager: mgr, Logger: log,
		Ownership: &agent.Ownership{AgentID: id, Duration: ownershipDuration},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	return &sharedAgent{id: id, nc: nc, mgr: mgr, svc: svc}
}

// connect opens a connection to srv, closed when the test ends.
func connect(t *testing.T, srv *embedded.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// newNamespace returns a client of namespace ns on its own connection.
func newNamespace(t *testing.T, srv *embedded.Server, ns string) *client.Namespace {
	t.Helper()
	c, err := client.New(connect(t, srv), client.WithRetry(5*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return c.Namespace(ns)
}

// ownedByA starts a server, a fake clock and agent "a" on them, and has
// holder h claim lease l of namespace ns for d through a, which so comes
// to own ns.
func ownedByA(t *testing.T, h string, d time.Duration) (*embedded.Server, *clocktest.Fake, *sharedAgent, *client.Namespace) {
	t.Helper()
	srv := startServer(t)
	clk := clocktest.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	a := startShared(t, srv, clk, "a")
	n := newNamespace(t, srv, "ns")
	if err := n.ClaimContext(ctxT(t), "l", h, d); err != nil {
		t.Fatal(err)
	}
	return srv, clk, a, n
}

// ownership returns the ownership lease of namespace ns, as a fresh read
// of mgr's bucket finds it.
func ownership(t *testing.T, ctx context.Context, mgr *actors.Manager, ns string) (lease.Info, bool) {
	t.Helper()
	owners, err := natskv.NewClient(natskv.Config{Bucket: mgr.Bucket(), Namespace: agent.OwnersNamespace})
	if err != nil {
		t.Fatal(err)
	}
	if err := owners.RefreshContext(ctx); err != nil {
		t.Fatal(err)
	}
	return owners.Lease(ns)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

// A request forwarded on a subject with the wrong number of tokens or an
// unknown operation gets INVALID_ARGUMENT naming the subject, rather than
// leaving the forwarding agent waiting out its timeout.
func TestAMalformedForwardedRequestGetsANamedError(t *testing.T) {
	srv := startServer(t)
	startShared(t, srv, clocktest.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), "a")
	nc := connect(t, srv)
	tests := []struct {
		name    string
		subject string
	}{
		{"unknown operation", "_leaseagent.lease.a.frobnicate.ns"},
		{"no namespace", "_leaseagent.lease.a.claim"},
		{"dotted namespace", "_leaseagent.lease.a.claim.ns.extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := status(t, request(t, nc, tt.subject, nil, nil))
			if st.GetCode() != messages.Code_CODE_INVALID_ARGUMENT || !strings.Contains(st.GetMessage(), "malformed forwarded request subject") {
				t.Fatalf("status %v %q; want INVALID_ARGUMENT naming a malformed forwarded request subject", st.GetCode(), st.GetMessage())
			}
		})
	}
}

func TestOneAgentAnswersForANamespaceWhicheverReceivesTheRequest(t *testing.T) {
	srv := startServer(t)
	clk := clocktest.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	a := startShared(t, srv, clk, "a")
	b := startShared(t, srv, clk, "b")
	n := newNamespace(t, srv, "ns")
	ctx := ctxT(t)

	// The queue group spreads requests over both agents at random: over
	// 40 requests both receive some, and the one that does not own the
	// namespace forwards them.
	if err := n.ClaimContext(ctx, "l", "h1", time.Minute); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if err := n.ClaimContext(ctx, "l", "h2", time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
			t.Fatalf("claim %d by another holder = %v, want ErrClaimDenied", i, err)
		}
		if err := n.Token("l", "h1").Check(nil); err != nil {
			t.Fatalf("check %d of the holder: %v", i, err)
		}
	}
	owners := append(a.svc.Owned(), b.svc.Owned()...)
	if !slices.Equal(owners, []string{"ns"}) {
		t.Fatalf("agents a and b own %v and %v, want ns owned by exactly one", a.svc.Owned(), b.svc.Owned())
	}
	if a.mgr.Serving("ns") == b.mgr.Serving("ns") {
		t.Fatalf("ns served by a: %v, by b: %v; want exactly one", a.mgr.Serving("ns"), b.mgr.Serving("ns"))
	}
}

func TestAnAgentThatStopsHandsItsNamespacesOverAtOnce(t *testing.T) {
	srv, clk, a, n := ownedByA(t, "h1", time.Minute)
	ctx := ctxT(t)
	var before natskv.Fence
	if err := n.Token("l", "h1").(*client.Token).CheckContext(ctx, &before); err != nil {
		t.Fatal(err)
	}
	b := startShared(t, srv, clk, "b")
	if err := a.svc.Stop(); err != nil {
		t.Fatal(err)
	}
	// The clock has not moved: b can only serve ns because a gave it up.
	var after natskv.Fence
	if err := n.Token("l", "h1").(*client.Token).CheckContext(ctx, &after); err != nil {
		t.Fatalf("check through b after a stopped: %v", err)
	}
	if after.Revision != before.Revision {
		t.Fatalf("fencing token %d after the handover, want %d", after.Revision, before.Revision)
	}
	if got := b.svc.Owned(); !slices.Equal(got, []string{"ns"}) {
		t.Fatalf("b owns %v, want [ns]", got)
	}
}

func TestADeadOwnersNamespaceIsTakenOverOnlyWhenItsOwnershipExpires(t *testing.T) {
	srv, clk, a, n := ownedByA(t, "h1", time.Hour)
	ctx := ctxT(t)
	b := startShared(t, srv, clk, "b")
	// b has seen a's ownership by now: it forwards to a.
	if err := n.Token("l", "h1").Check(nil); err != nil {
		t.Fatal(err)
	}
	a.die(t) // it can neither answer nor renew

	// Until a's ownership has expired by b's clock (Duration plus the
	// drift margin after b first saw it), b forwards to a, and nobody
	// answers.
	clk.Advance(ownershipDuration)
	_, err := connect(t, srv).Request(protocol.RequestSubject(protocol.DefaultPrefix, protocol.OpState, "ns"),
		marshal(t, &messages.StateRequest{Lease: "l"}), patience)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request while a's ownership lasts = %v, want no responders", err)
	}
	if got := b.svc.Owned(); len(got) != 0 {
		t.Fatalf("b owns %v before a's ownership expired", got)
	}
	clk.Advance(ownershipDuration / 50)
	if err := n.Token("l", "h1").Check(nil); err != nil {
		t.Fatalf("check through b once a's ownership expired: %v", err)
	}
	if got := b.svc.Owned(); !slices.Equal(got, []string{"ns"}) {
		t.Fatalf("b owns %v, want [ns]", got)
	}
	// The new owner treats the lease by the clock rule: held for its whole
	// duration from when b first saw it, so h1 is not cut short.
	if err := n.ClaimContext(ctx, "l", "h2", time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
		t.Fatalf("claim by another holder after the takeover = %v, want ErrClaimDenied", err)
	}
}

// Two agents started at the same moment with one ID both asked before
// either answered, and both ran: two owners of every namespace.
func TestTwoAgentsStartedTogetherWithOneIDDoNotBothRun(t *testing.T) {
	srv := startServer(t)
	const agents = 4
	errs := make(chan error, agents)
	var ready, start sync.WaitGroup
	ready.Add(agents)
	start.Add(1)
	for range agents {
		nc := connect(t, srv)
		go func() {
			ready.Done()
			start.Wait()
			errs <- startAlone(t, nc, "a")
		}()
	}
	ready.Wait()
	start.Done()
	running := 0
	for range agents {
		switch err := <-errs; {
		case err == nil:
			running++
		case !strings.Contains(err.Error(), `another agent already runs as "a"`):
			t.Errorf("agent refused with %v, want an error saying the ID is taken", err)
		}
	}
	if running > 1 {
		t.Fatalf("%d agents run as \"a\" at once", running)
	}
}

// startAlone starts an agent with ownership on nc, with its own Manager.
func startAlone(t *testing.T, nc *nats.Conn, id string) error {
	t.Helper()
	mgr, err := actors.New(context.Background(), actors.Config{Conn: nc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Stop(context.Background()) })
	svc, err := agent.Start(agent.Config{Conn: nc, Manager: mgr, Ownership: &agent.Ownership{AgentID: id}})
	if err == nil {
		t.Cleanup(func() { _ = svc.Stop() })
	}
	return err
}

// An agent that has run for a while may answer a ping slowly (a loaded
// machine, a distant server): it still holds its ID.
func TestAnAgentSlowToAnswerStillHoldsItsID(t *testing.T) {
	srv := startServer(t)
	running := connect(t, srv)
	if _, err := running.Subscribe("_leaseagent.lease.a.ping._", func(m *nats.Msg) {
		time.Sleep(300 * time.Millisecond) // the answer is slow, not lost
		_ = m.Respond(nil)
	}); err != nil {
		t.Fatal(err)
	}
	if err := running.Flush(); err != nil {
		t.Fatal(err)
	}
	err := startAlone(t, connect(t, srv), "a")
	if err == nil || !strings.Contains(err.Error(), `another agent already runs as "a"`) {
		t.Fatalf("agent with the ID of one that answers in 300ms: %v, want an error saying the ID is taken", err)
	}
}

// A subscriber that hears pings and does not answer may be an agent with
// the same ID, paused: a new agent refuses to start, and says why.
func TestASilentListenerOnTheIDKeepsAnAgentFromStarting(t *testing.T) {
	srv := startServer(t)
	paused := connect(t, srv)
	if _, err := paused.Subscribe("_leaseagent.lease.a.ping._", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := paused.Flush(); err != nil {
		t.Fatal(err)
	}
	err := startAlone(t, connect(t, srv), "a")
	if err == nil || !strings.Contains(err.Error(), "did not answer") || !strings.Contains(err.Error(), "paused") {
		t.Fatalf("agent beside a silent listener on its ID: %v, want an error saying something did not answer", err)
	}
}

// On a connection with NoEcho an agent never hears its own answer to a
// ping; alone, it starts.
func TestAnAgentAloneOnANoEchoConnectionStarts(t *testing.T) {
	srv := startServer(t)
	nc, err := nats.Connect(srv.ClientURL(), nats.NoEcho())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := startAlone(t, nc, "solo"); err != nil {
		t.Fatalf("agent alone on a NoEcho connection: %v", err)
	}
}

// A request for a namespace the policy refuses changes nothing: not even
// an ownership lease is written for it.
func TestARefusedNamespaceIsNotOwned(t *testing.T) {
	srv := startServer(t)
	nc := connect(t, srv)
	mgr, err := actors.New(context.Background(), actors.Config{
		Conn: nc, Logger: slog.New(slog.DiscardHandler), Policy: &policy.Policy{DenyUnknown: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Stop(context.Background()) })
	svc, err := agent.Start(agent.Config{Conn: nc, Manager: mgr, Ownership: &agent.Ownership{AgentID: "a", Duration: ownershipDuration}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := newNamespace(t, srv, "junk").ClaimContext(ctx, "l", "h", time.Minute); !errors.Is(err, protocol.ErrInvalidArgument) {
		t.Fatalf("claim in a namespace the policy refuses = %v, want ErrInvalidArgument", err)
	}
	if info, held := ownership(t, ctx, mgr, "junk"); held {
		t.Fatalf("a refused namespace got an ownership lease: held by %q", info.Holder)
	}
}

// A request that a declared namespace's rules refuse (a duration, a lease
// or holder name) gets no ownership write either: it changes nothing, as
// one for a namespace the policy refuses outright.
func TestARequestThePolicyRefusesDoesNotOwnItsNamespace(t *testing.T) {
	pol := &policy.Policy{DenyUnknown: true, Namespaces: map[string]policy.Namespace{
		"app": {
			MinDuration: 5 * time.Second,
			MaxDuration: time.Minute,
			Lease:       policy.MustPattern(`[a-z]+`),
			Holder:      policy.MustPattern(`[a-z]+/[0-9]+`),
		},
	}}
	for _, tc := range []struct {
		name string
		call func(ctx context.Context, n *client.Namespace) error
	}{
		{"claim below min_duration", func(ctx context.Context, n *client.Namespace) error {
			return n.ClaimContext(ctx, "mysql", "mysql/0", time.Second)
		}},
		{"claim above max_duration", func(ctx context.Context, n *client.Namespace) error {
			return n.ClaimContext(ctx, "mysql", "mysql/0", 2*time.Minute)
		}},
		{"claim of a lease name off lease_pattern", func(ctx context.Context, n *client.Namespace) error {
			return n.ClaimContext(ctx, "MySQL", "mysql/0", time.Minute)
		}},
		{"claim by a holder off holder_pattern", func(ctx context.Context, n *client.Namespace) error {
			return n.ClaimContext(ctx, "mysql", "root", time.Minute)
		}},
		{"check by a holder off holder_pattern", func(ctx context.Context, n *client.Namespace) error {
			return n.Token("mysql", "root").(*client.Token).CheckContext(ctx, nil)
		}},
		{"release by a holder off holder_pattern", func(ctx context.Context, n *client.Namespace) error {
			return n.Release(ctx, "mysql", "root")
		}},
		{"state of a lease name off lease_pattern", func(ctx context.Context, n *client.Namespace) error {
			_, err := n.Lease(ctx, "MySQL")
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t)
			nc := connect(t, srv)
			mgr, err := actors.New(context.Background(), actors.Config{
				Conn: nc, Logger: slog.New(slog.DiscardHandler), Policy: pol,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = mgr.Stop(context.Background()) })
			svc, err := agent.Start(agent.Config{Conn: nc, Manager: mgr, Logger: slog.New(slog.DiscardHandler), Ownership: &agent.Ownership{AgentID: "a", Duration: ownershipDuration}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = svc.Stop() })
			ctx := ctxT(t)
			if err := tc.call(ctx, newNamespace(t, srv, "app")); !errors.Is(err, protocol.ErrInvalidArgument) || !strings.Contains(err.Error(), `namespace "app"`) {
				t.Fatalf("got %v, want ErrInvalidArgument naming the namespace", err)
			}
			if info, held := ownership(t, ctx, mgr, "app"); held {
				t.Errorf("a refused request got its namespace an ownership lease: held by %q", info.Holder)
			}
			if mgr.Serving("app") {
				t.Errorf("a refused request started the namespace's actor")
			}
		})
	}
}

// A namespace this agent cannot serve, because MaxNamespaces are served
// already, gets no ownership write either: a flood of new names would
// otherwise cost a store write each, and owned namespaces nobody serves.
func TestANamespaceBeyondMaxNamespacesIsNotOwned(t *testing.T) {
	srv := startServer(t)
	nc := connect(t, srv)
	mgr, err := actors.New(context.Background(), actors.Config{
		Conn: nc, Logger: slog.New(slog.DiscardHandler), MaxNamespaces: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Stop(context.Background()) })
	svc, err := agent.Start(agent.Config{Conn: nc, Manager: mgr, Logger: slog.New(slog.DiscardHandler), Ownership: &agent.Ownership{AgentID: "a", Duration: ownershipDuration}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := newNamespace(t, srv, "first").ClaimContext(ctx, "l", "h", time.Minute); err != nil {
		t.Fatalf("claim in the first namespace: %v", err)
	}
	// One attempt: the client would retry an unavailable claim.
	nc2 := connect(t, srv)
	msg, err := nc2.Request("lease.claim.second", claimBody(t, "l", "h", time.Minute), patience)
	if err != nil {
		t.Fatal(err)
	}
	if st := status(t, msg); st.GetCode() != messages.Code_CODE_UNAVAILABLE || !st.GetRefused() || !strings.Contains(st.GetMessage(), "MaxNamespaces") {
		t.Fatalf("claim in a second namespace with MaxNamespaces 1: %v, want UNAVAILABLE, refused, naming MaxNamespaces", st)
	}
	if info, held := ownership(t, ctx, mgr, "second"); held {
		t.Fatalf("a namespace beyond MaxNamespaces got an ownership lease: held by %q", info.Holder)
	}
}

func TestAnAgentIDCanRunOnlyOnce(t *testing.T) {
	srv := startServer(t)
	clk := clocktest.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	a := startShared(t, srv, clk, "a")
	_, err := agent.Start(agent.Config{Conn: a.nc, Manager: a.mgr, Ownership: &agent.Ownership{AgentID: "a"}})
	if err == nil || !strings.Contains(err.Error(), `another agent already runs as "a"`) {
		t.Fatalf("second agent with ID a: %v, want an error saying the ID is taken", err)
	}
}

func TestOwnershipConfigNamesTheBadField(t *testing.T) {
	tests := []struct {
		name string
		cfg  agent.Ownership
		want string
	}{
		{"empty agent ID", agent.Ownership{}, "AgentID"},
		{"agent ID with a dot", agent.Ownership{AgentID: "host.example"}, "AgentID"},
		{"negative duration", agent.Ownership{AgentID: "a", Duration: -time.Second}, "Duration"},
		{"duration below the minimum", agent.Ownership{AgentID: "a", Duration: time.Millisecond}, "below the minimum"},
		{"renew too slow", agent.Ownership{AgentID: "a", Duration: 10 * time.Second, Renew: 5 * time.Second}, "Renew"},
		{"drift too large", agent.Ownership{AgentID: "a", ClockDriftRate: 0.5}, "ClockDriftRate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
	if err := (agent.Ownership{AgentID: "host-1_a"}).Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

// ownershipRevision returns the revision of namespace ns's ownership lease.
func ownershipRevision(t *testing.T, srv *embedded.Server, ns string) uint64 {
	t.Helper()
	js, err := jetstream.New(connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctxT(t), natskv.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctxT(t), agent.OwnersNamespace+"."+natskv.EscapeName(ns))
	if err != nil {
		t.Fatal(err)
	}
	return e.Revision()
}

// An agent restarted under its ID takes back what it owned at once, and
// must write to do so: the other agents saw the old revision, and would
// take the namespace when that expires by their clocks.
func TestAnAgentRestartedUnderItsIDTakesItsNamespacesBackByWriting(t *testing.T) {
	srv, clk, a, n := ownedByA(t, "h", time.Hour)
	before := ownershipRevision(t, srv, "ns")
	a.die(t) // without releasing anything
	again := startShared(t, srv, clk, "a")
	if err := n.Token("l", "h").Check(nil); err != nil {
		t.Fatalf("check after a came back: %v", err)
	}
	if got := again.svc.Owned(); !slices.Equal(got, []string{"ns"}) {
		t.Fatalf("a owns %v after coming back, want [ns]", got)
	}
	if after := ownershipRevision(t, srv, "ns"); after == before {
		t.Fatalf("a took ns back without writing its ownership (revision still %d)", after)
	}
}

// A lone agent restarted under its ID takes its namespaces back even if no
// request comes: their leases must still expire, and their expired events
// go out, as after a takeover from a departed agent.
func TestARestartedAgentTakesItsNamespacesBackWithoutARequest(t *testing.T) {
	srv, clk, a, _ := ownedByA(t, "h", time.Second)
	a.die(t) // a crash: nothing released
	expired, err := connect(t, srv).SubscribeSync(protocol.EventSubject(protocol.DefaultPrefix, protocol.EventExpired, "ns", "l"))
	if err != nil {
		t.Fatal(err)
	}
	again := startShared(t, srv, clk, "a")
	for deadline := time.Now().Add(patience); time.Now().Before(deadline); {
		clk.Advance(500 * time.Millisecond)
		_, err := expired.NextMsg(50 * time.Millisecond)
		if err == nil {
			if got := again.svc.Owned(); !slices.Equal(got, []string{"ns"}) {
				t.Fatalf("a owns %v after the expiry, want [ns]", got)
			}
			return
		}
		if !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
	}
	t.Fatalf("with no request, the restarted agent owns %v and never expired ns/l", again.svc.Owned())
}
