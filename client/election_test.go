package client_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/clock"
	"github.com/leaseagent/lease/internal/testenv"
	"github.com/leaseagent/lease/protocol"
)

// Elections run on real time: the agent's clock and the candidates' must
// be the same clock.
func realTimeAgent(t *testing.T) *testenv.Env {
	return testenv.Start(t, func(cfg *actors.Config) { cfg.Clock = clock.System() })
}

func newClient(t *testing.T, e *testenv.Env, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(e.Connect(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// leaderLog records what the candidates do.
type leaderLog struct {
	mu      sync.Mutex
	leading atomic.Int32
	overlap atomic.Bool
	started chan string
	until   map[string]time.Time
}

func newLeaderLog() *leaderLog {
	return &leaderLog{started: make(chan string, 10), until: make(map[string]time.Time)}
}

func (l *leaderLog) election(holder string) client.Election {
	return client.Election{
		Lease: "leader", Holder: holder, Duration: time.Second, Release: true,
		Run: func(ctx context.Context) {
			if l.leading.Add(1) > 1 {
				l.overlap.Store(true)
			}
			l.started <- holder
			<-ctx.Done()
			l.leading.Add(-1)
		},
		OnRenewed: func(until time.Time) {
			l.mu.Lock()
			l.until[holder] = until
			l.mu.Unlock()
		},
	}
}

func (l *leaderLog) awaitLeader(t *testing.T) string {
	t.Helper()
	select {
	case h := <-l.started:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("nobody leads")
		return ""
	}
}

func TestElectionHasOneLeaderAndHandsOver(t *testing.T) {
	e := realTimeAgent(t)
	n := newClient(t, e).Namespace("ns")
	log := newLeaderLog()
	ctxs := map[string]context.CancelFunc{}
	results := make(chan error, 2)
	for _, holder := range []string{"a", "b"} {
		ctx, cancel := context.WithCancel(context.Background())
		ctxs[holder] = cancel
		go func() { results <- n.Elect(ctx, log.election(holder)) }()
	}
	first := log.awaitLeader(t)
	// The leader steps down and releases: the other takes over at once,
	// woken by the expired event.
	stepped := time.Now()
	ctxs[first]()
	second := log.awaitLeader(t)
	if second == first {
		t.Fatalf("%q led twice", first)
	}
	if waited := time.Since(stepped); waited > 500*time.Millisecond {
		t.Fatalf("handover took %v after a release", waited)
	}
	for _, cancel := range ctxs {
		cancel()
	}
	for range 2 {
		if err := <-results; !errors.Is(err, context.Canceled) {
			t.Fatalf("Elect = %v, want context.Canceled", err)
		}
	}
	if log.overlap.Load() {
		t.Fatal("two leaders at once")
	}
}

func TestLeaderCutOffStopsBeforeItsGuaranteeRunsOut(t *testing.T) {
	e := realTimeAgent(t)
	n := newClient(t, e, client.WithRequestTimeout(100*time.Millisecond)).Namespace("ns")
	var (
		mu        sync.Mutex
		until     time.Time
		cancelled time.Time
	)
	leading := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		result <- n.Elect(context.Background(), client.Election{
			Lease: "leader", Holder: "a", Duration: time.Second,
			Run: func(ctx context.Context) {
				close(leading)
				<-ctx.Done()
				mu.Lock()
				cancelled = time.Now()
				mu.Unlock()
			},
			OnRenewed: func(u time.Time) { mu.Lock(); until = u; mu.Unlock() },
		})
	}()
	<-leading
	// The agent goes away: renewals find no responder.
	if err := e.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		if !errors.Is(err, client.ErrLeadershipLost) {
			t.Fatalf("Elect = %v, want ErrLeadershipLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("leader kept going without renewals")
	}
	mu.Lock()
	defer mu.Unlock()
	if !cancelled.Before(until) {
		t.Fatalf("work cancelled at %v, not before the guarantee ran out at %v", cancelled, until)
	}
}

// slowClaims serves the protocol under prefix "slow" by passing each
// request on to the agent and holding back each claim's answer by delay:
// an agent or a network that stalls.
func slowClaims(t *testing.T, e *testenv.Env, delay time.Duration) {
	t.Helper()
	nc := e.Connect(t)
	_, err := nc.Subscribe("slow.>", func(m *nats.Msg) {
		go func() {
			r, err := nc.Request("lease"+strings.TrimPrefix(m.Subject, "slow"), m.Data, 5*time.Second)
			if err != nil {
				return
			}
			if strings.HasPrefix(m.Subject, "slow.claim.") {
				time.Sleep(delay)
			}
			_ = m.Respond(r.Data)
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// A claim granted, but answered after its guarantee ran out, is not
// leadership: another candidate may hold the lease by then.
func TestAClaimAnsweredTooLateDoesNotLead(t *testing.T) {
	e := realTimeAgent(t)
	slowClaims(t, e, 1300*time.Millisecond)
	n := newClient(t, e, client.WithPrefix("slow")).Namespace("ns")
	var led atomic.Bool
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := n.Elect(ctx, client.Election{
		Lease: "leader", Holder: "a", Duration: time.Second,
		Run:       func(context.Context) { led.Store(true) },
		OnRenewed: func(time.Time) { led.Store(true) },
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Elect = %v, want the context's deadline", err)
	}
	if led.Load() {
		t.Fatal("led on claims answered after their guarantee ran out")
	}
}

// A candidate whose claims are granted but always answered too late must
// not keep the lease from one whose answers come in time.
func TestACandidateAnsweredTooLateLetsAnotherLead(t *testing.T) {
	e := realTimeAgent(t)
	slowClaims(t, e, 950*time.Millisecond) // late for Duration 1s less Margin 100ms
	slow := newClient(t, e, client.WithPrefix("slow")).Namespace("ns")
	fast := newClient(t, e).Namespace("ns")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	claimedBySlow := make(chan struct{})
	var once sync.Once
	sub, err := e.Connect(t).Subscribe("lease.claimed.ns.leader", func(*nats.Msg) { once.Do(func() { close(claimedBySlow) }) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	go func() {
		_ = slow.Elect(ctx, client.Election{Lease: "leader", Holder: "slow", Duration: time.Second, Margin: 100 * time.Millisecond,
			Run: func(c context.Context) { <-c.Done() }})
	}()
	<-claimedBySlow // the slow candidate holds the lease first
	led := make(chan struct{})
	go func() {
		_ = fast.Elect(ctx, client.Election{Lease: "leader", Holder: "fast", Duration: time.Second,
			Run: func(c context.Context) { close(led); <-c.Done() }})
	}()
	select {
	case <-led:
	case <-ctx.Done():
		t.Fatal("the candidate answered in time never led: the late one kept the lease")
	}
}

// A leader whose lease is released in its name (an operator's `leaseagent
// release`) stops at once, from the lease's expired event, not at its next
// renewal: Run's context ends and Elect returns ErrLeadershipLost.
func TestLeaderStopsAtOnceWhenItsLeaseIsReleased(t *testing.T) {
	e := realTimeAgent(t)
	n := newClient(t, e).Namespace("ns")
	leading, stopped := make(chan struct{}), make(chan struct{})
	var renewals atomic.Int32
	result := make(chan error, 1)
	go func() {
		result <- n.Elect(context.Background(), client.Election{
			// Renewals every 20 s: none comes within the test's wait.
			Lease: "leader", Holder: "a", Duration: time.Minute,
			Run:              func(ctx context.Context) { close(leading); <-ctx.Done() },
			OnStoppedLeading: func() { close(stopped) },
			OnRenewed:        func(time.Time) { renewals.Add(1) },
		})
	}()
	<-leading
	if err := e.Manager.Namespace("ns").Release(context.Background(), "leader", "a"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		if !errors.Is(err, client.ErrLeadershipLost) || !strings.Contains(err.Error(), "released or expired") {
			t.Fatalf("Elect = %v, want ErrLeadershipLost saying the lease was released or expired", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("leader did not notice the release")
	}
	<-stopped
	if got := renewals.Load(); got != 1 {
		t.Fatalf("OnRenewed called %d times, want once (the claim): the event, not a renewal, ended leadership", got)
	}
}

func TestElectionReportsNewLeaders(t *testing.T) {
	e := realTimeAgent(t)
	n := newClient(t, e).Namespace("ns")
	if err := e.Manager.Namespace("ns").ClaimContext(context.Background(), "leader", "incumbent", 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leading := make(chan struct{})
	go func() {
		_ = n.Elect(ctx, client.Election{
			Lease: "leader", Holder: "me", Duration: time.Second,
			Run:         func(ctx context.Context) { close(leading); <-ctx.Done() },
			OnNewLeader: func(h string) { seen <- h },
		})
	}()
	<-leading
	// The incumbent's claim may or may not be seen (its event can still be
	// on its way when the candidate subscribes); this candidate's must be.
	for {
		select {
		case h := <-seen:
			switch h {
			case "me":
				return
			case "incumbent":
			default:
				t.Fatalf("new leader %q, want incumbent or me", h)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no new-leader callback for this candidate")
		}
	}
}

func TestElectionConfigIsValidated(t *testing.T) {
	e := testenv.Start(t)
	n := newClient(t, e).Namespace("ns")
	run := func(context.Context) {}
	for name, el := range map[string]client.Election{
		"no duration":     {Lease: "l", Holder: "h", Run: run},
		"no run":          {Lease: "l", Holder: "h", Duration: time.Second},
		"renew too late":  {Lease: "l", Holder: "h", Duration: time.Second, RenewEvery: time.Second, Run: run},
		"negative margin": {Lease: "l", Holder: "h", Duration: time.Second, Margin: -1, Run: run},
		"nanoseconds":     {Lease: "l", Holder: "h", Duration: 2, Run: run},
		"empty lease":     {Holder: "h", Duration: time.Second, Run: run},
		"empty holder":    {Lease: "l", Duration: time.Second, Run: run},
		"bad lease":       {Lease: "a.b", Holder: "h", Duration: time.Second, Run: run},
	} {
		t.Run(name, func(t *testing.T) {
			if err := n.Elect(context.Background(), el); !errors.Is(err, protocol.ErrInvalidArgument) {
				t.Fatalf("Elect = %v, want an invalid-argument error", err)
			}
		})
	}
}
