package actors

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/clock/clocktest"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// patience bounds every wait for something that should happen; tests never
// sleep, they wait for events, and fail if one does not come in time.
const patience = 10 * time.Second

// harness is a Manager on a real embedded JetStream server, a fake clock,
// and a view of the bucket from outside the Manager.
type harness struct {
	t      *testing.T
	nc     *nats.Conn
	js     jetstream.JetStream
	bucket *natskv.Bucket
	clock  *clocktest.Fake
	m      *Manager
	loads  chan string // a namespace installed a snapshot
	events *nats.Subscription
}

// newHarness starts the server and a Manager; edit changes its config.
func newHarness(t *testing.T, edit ...func(*Config)) *harness {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	h := &harness{t: t, nc: nc, clock: clocktest.NewFake(epoch), loads: make(chan string, 1000)}
	if h.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if h.events, err = nc.SubscribeSync(DefaultPrefix + ".>"); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Conn:     nc,
		Clock:    h.clock,
		MaxSleep: time.Hour,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		hooks:    &hooks{},
	}
	for _, e := range edit {
		e(&cfg)
	}
	prev := cfg.hooks.loaded
	cfg.hooks.loaded = func(ns string) {
		if prev != nil {
			prev(ns)
		}
		h.loads <- ns
	}
	if h.m, err = New(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := h.m.Stop(ctx); err != nil {
			t.Errorf("stop manager: %v", err)
		}
	})
	if h.bucket, err = natskv.OpenBucket(context.Background(), natskv.BucketConfig{JetStream: h.js}); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	h.t.Cleanup(cancel)
	return ctx
}

// start makes sure the namespace's actor runs and has loaded the store.
func (h *harness) start(ns string) *Namespace {
	h.t.Helper()
	n := h.m.Namespace(ns)
	if _, err := n.Leases(h.ctx()); err != nil {
		h.t.Fatalf("start namespace %q: %v", ns, err)
	}
	h.drainLoads()
	return n
}

// drainLoads forgets the loads seen so far.
func (h *harness) drainLoads() {
	for {
		select {
		case <-h.loads:
		default:
			return
		}
	}
}

// awaitLoad waits for the next snapshot a namespace installs.
func (h *harness) awaitLoad() {
	h.t.Helper()
	select {
	case <-h.loads:
	case <-time.After(patience):
		h.t.Fatal("no load")
	}
}

// outsider is a natskv Client of the namespace that is not the Manager's.
func (h *harness) outsider(ns string) *natskv.Client {
	h.t.Helper()
	c, err := natskv.NewClient(natskv.Config{Bucket: h.bucket, Namespace: ns, Clock: h.clock})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := c.Refresh(); err != nil {
		h.t.Fatal(err)
	}
	return c
}

// holderInStore reads a lease's holder straight from the bucket.
func (h *harness) holderInStore(ns, name string) string {
	h.t.Helper()
	return h.outsider(ns).Leases()[name].Holder
}

// lastRevision is the bucket's last revision: it moves with every write.
func (h *harness) lastRevision() uint64 {
	h.t.Helper()
	st, err := h.js.Stream(context.Background(), "KV_"+natskv.DefaultBucket)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.LastSeq
}

// event is one event received on <prefix>.>.
type event struct {
	subject string
	expired *messages.ExpiredEvent
	claimed *messages.ClaimedEvent
}

// nextEvent waits for the next event.
func (h *harness) nextEvent() event {
	h.t.Helper()
	msg, err := h.events.NextMsg(patience)
	if err != nil {
		h.t.Fatalf("no event: %v", err)
	}
	ev := event{subject: msg.Subject}
	var m proto.Message
	if len(msg.Subject) > len("lease.expired") && msg.Subject[:len("lease.expired")] == "lease.expired" {
		ev.expired = &messages.ExpiredEvent{}
		m = ev.expired
	} else {
		ev.claimed = &messages.ClaimedEvent{}
		m = ev.claimed
	}
	if err := proto.Unmarshal(msg.Data, m); err != nil {
		h.t.Fatalf("event on %s: %v", msg.Subject, err)
	}
	return ev
}

// expectExpired waits for the next event and checks it is the expiry of
// the lease.
func (h *harness) expectExpired(ns, name, holder string) *messages.ExpiredEvent {
	h.t.Helper()
	ev := h.nextEvent()
	want := protocol.EventSubject(DefaultPrefix, protocol.EventExpired, ns, name)
	if ev.subject != want || ev.expired.GetHolder() != holder || ev.expired.GetLease() != name || ev.expired.GetNamespace() != ns {
		h.t.Fatalf("event %s %v; want %s for holder %q", ev.subject, ev, want, holder)
	}
	return ev.expired
}

// expectClaimed waits for the next event and checks it is a claim.
func (h *harness) expectClaimed(ns, name, holder string) *messages.ClaimedEvent {
	h.t.Helper()
	ev := h.nextEvent()
	want := protocol.EventSubject(DefaultPrefix, protocol.EventClaimed, ns, name)
	if ev.subject != want || ev.claimed.GetHolder() != holder || ev.claimed.GetLease() != name || ev.claimed.GetNamespace() != ns {
		h.t.Fatalf("event %s %v; want %s for holder %q", ev.subject, ev, want, holder)
	}
	return ev.claimed
}

// noMoreEvents checks that no event is pending, after a round trip that
// would have delivered one already published.
func (h *harness) noMoreEvents() {
	h.t.Helper()
	if err := h.nc.Flush(); err != nil {
		h.t.Fatal(err)
	}
	if n, _, _ := h.events.Pending(); n != 0 {
		msg, _ := h.events.NextMsg(0)
		h.t.Fatalf("unexpected event on %s", msg.Subject)
	}
}

func (h *harness) claim(n *Namespace, name, holder string, d time.Duration) {
	h.t.Helper()
	if err := n.ClaimContext(h.ctx(), name, holder, d); err != nil {
		h.t.Fatalf("claim %q for %q: %v", name, holder, err)
	}
}

func (h *harness) mustHold(n *Namespace, name, holder string) {
	h.t.Helper()
	if err := n.Token(name, holder).(*Token).CheckContext(h.ctx(), nil); err != nil {
		h.t.Fatalf("check %q held by %q: %v", name, holder, err)
	}
}

func (h *harness) mustNotHold(n *Namespace, name, holder string) {
	h.t.Helper()
	if err := n.Token(name, holder).(*Token).CheckContext(h.ctx(), nil); !errors.Is(err, lease.ErrNotHeld) {
		h.t.Fatalf("check %q held by %q = %v, want ErrNotHeld", name, holder, err)
	}
}

// waitAsync starts WaitUntilExpired and returns its result channel once the
// actor has registered the waiter (or answered it).
func (h *harness) waitAsync(n *Namespace, name string, registered <-chan string) <-chan error {
	h.t.Helper()
	done := make(chan error, 1)
	go func() { done <- n.WaitUntilExpiredContext(h.ctx(), name) }()
	select {
	case <-registered:
	case err := <-done:
		done <- err
	case <-time.After(patience):
		h.t.Fatal("waiter never reached the actor")
	}
	return done
}

func expectDone(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitUntilExpired: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("WaitUntilExpired did not return")
	}
}

func expectBlocked(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("WaitUntilExpired returned %v while the lease is held", err)
	default:
	}
}

// waitRegistrations reports each WaitUntilExpired the actors receive.
func waitRegistrations(cfg *Config) <-chan string {
	ch := make(chan string, 100)
	cfg.hooks.receive = func(_ string, msg any) {
		if m, ok := msg.(*waitRequest); ok {
			ch <- m.lease
		}
	}
	return ch
}

// holdWrite makes the store write of one lease wait once it has begun
// (the returned channel is closed then) until release is closed or, with
// release nil, until the Manager stops.
func holdWrite(cfg *Config, leaseName string, release <-chan struct{}) <-chan struct{} {
	entered := make(chan struct{})
	var once sync.Once
	cfg.hooks.runWrite = func(ctx context.Context, w *natskv.Write) {
		if w.Lease() == leaseName {
			once.Do(func() { close(entered) })
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		w.Run(ctx)
	}
	return entered
}
