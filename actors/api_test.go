package actors_test

// Tests of the Manager's documented API, from outside the package, against
// a real embedded server.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/clock/clocktest"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/natskv"
)

// patience bounds every wait for something that should happen.
const patience = 10 * time.Second

// connect starts an embedded server and connects to it; both end with the
// test.
func connect(t *testing.T) *nats.Conn {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Port: embedded.RandomPort, DataDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start starts a Manager on nc that stops at the end of the test.
func start(t *testing.T, nc *nats.Conn) *actors.Manager {
	t.Helper()
	m, err := actors.New(testContext(t), actors.Config{Conn: nc, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return m
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

// settledGoroutines waits until at most want goroutines run, or patience
// has passed, and returns how many run. Goroutines that have been told to
// end take a moment to do so; nothing reports when they have.
func settledGoroutines(want int) int {
	deadline := time.Now().Add(patience)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		runtime.Gosched()
	}
}

// footprint is what runs beside a Manager on its connection.
type footprint struct{ goroutines, subscriptions int }

// leftBehind reports whether f, taken after a Manager stopped, has more
// than before, taken before it started. Fewer goroutines is fine: one of
// the server's may have ended meanwhile.
func (f footprint) leftBehind(before footprint) bool {
	return f.goroutines > before.goroutines || f.subscriptions != before.subscriptions
}

// useAndStop starts a Manager on nc, claims, checks and releases a lease
// through it, stops it with stop, and returns what ran before New and
// what still runs after the Manager stopped. The bucket exists before
// New, so that its stream's server goroutines count as before.
func useAndStop(t *testing.T, stop func(*actors.Manager) error) (before, after footprint) {
	t.Helper()
	nc := connect(t)
	ctx := testContext(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natskv.OpenBucket(ctx, natskv.BucketConfig{JetStream: js}); err != nil {
		t.Fatal(err)
	}
	before = footprint{runtime.NumGoroutine(), nc.NumSubscriptions()}
	m, err := actors.New(ctx, actors.Config{Conn: nc, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ns := m.Namespace("ns")
	if err := ns.ClaimContext(ctx, "l", "h", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := ns.Token("l", "h").Check(nil); err != nil {
		t.Fatal(err)
	}
	if err := ns.Release(ctx, "l", "h"); err != nil {
		t.Fatal(err)
	}
	if err := stop(m); err != nil {
		t.Logf("Stop: %v", err)
	}
	after = footprint{settledGoroutines(before.goroutines), nc.NumSubscriptions()}
	return before, after
}

func TestConfigValidateNamesBadField(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*actors.Config)
		field string
	}{
		{"nil Conn", func(c *actors.Config) { c.Conn = nil }, "Config.Conn"},
		{"bad Prefix", func(c *actors.Config) { c.Prefix = "a b" }, "Config.Prefix"},
		{"negative MaxSleep", func(c *actors.Config) { c.MaxSleep = -1 }, "Config.MaxSleep"},
		{"negative IdleTimeout", func(c *actors.Config) { c.IdleTimeout = -1 }, "Config.IdleTimeout"},
		{"negative MaxNamespaces", func(c *actors.Config) { c.MaxNamespaces = -1 }, "Config.MaxNamespaces"},
		{"negative MaxDuration", func(c *actors.Config) { c.MaxDuration = -1 }, "Config.MaxDuration"},
		{"negative ClaimRetries", func(c *actors.Config) { c.ClaimRetries = -1 }, "Config.ClaimRetries"},
		{"negative WriteTimeout", func(c *actors.Config) { c.WriteTimeout = -1 }, "Config.WriteTimeout"},
		{"negative ClockDriftRate", func(c *actors.Config) { c.ClockDriftRate = -0.1 }, "Config.ClockDriftRate"},
		{"ClockDriftRate of one", func(c *actors.Config) { c.ClockDriftRate = 1 }, "Config.ClockDriftRate"},
		{"infinite ClockDriftRate", func(c *actors.Config) { c.ClockDriftRate = math.Inf(1) }, "Config.ClockDriftRate"},
		{"NaN ClockDriftRate", func(c *actors.Config) { c.ClockDriftRate = math.NaN() }, "Config.ClockDriftRate"},
		{"invalid Bucket name", func(c *actors.Config) { c.Bucket = "a.b" }, "Config.Bucket"},
		{"negative Replicas", func(c *actors.Config) { c.Replicas = -1 }, "Config.Replicas"},
		{"six Replicas", func(c *actors.Config) { c.Replicas = 6 }, "Config.Replicas"},
		{"unknown Storage", func(c *actors.Config) { c.Storage = 7 }, "Config.Storage"},
		{"control character in WriterID", func(c *actors.Config) { c.WriterID = "a\nb" }, "Config.WriterID"},
		{"DeleteMarkerTTL under a second", func(c *actors.Config) { c.DeleteMarkerTTL = time.Millisecond }, "Config.DeleteMarkerTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := actors.Config{Conn: new(nats.Conn)}
			tt.edit(&cfg)
			err := cfg.Validate()
			// Named as the caller knows it: a field of actors.Config, not
			// of some config it is copied to.
			if want := "actors: " + tt.field; err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, want)
			}
		})
	}
}

func TestStopLeavesNothingOnTheConnection(t *testing.T) {
	before, after := useAndStop(t, func(m *actors.Manager) error {
		return m.Stop(testContext(t))
	})
	if after.leftBehind(before) {
		t.Fatalf("after Stop: %+v, before New: %+v", after, before)
	}
}

func TestStopWhoseContextEndsStillReleasesEverything(t *testing.T) {
	before, after := useAndStop(t, func(m *actors.Manager) error {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return m.Stop(ctx)
	})
	if after.leftBehind(before) {
		t.Fatalf("after Stop with an ended context: %+v, before New: %+v", after, before)
	}
}

// A call whose context has ended before it is made returns the context's
// error, and must then not have done anything: the caller cannot tell.
func TestContextEndedBeforeCallChangesNothing(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		// setup runs before, call with the ended context, and after
		// reports whether the lease is as setup left it.
		setup, call, after func(context.Context, *actors.Namespace) error
	}{
		{
			name:  "ClaimContext",
			setup: func(context.Context, *actors.Namespace) error { return nil },
			call: func(ctx context.Context, ns *actors.Namespace) error {
				return ns.ClaimContext(ctx, "l", "ghost", time.Minute)
			},
			after: func(ctx context.Context, ns *actors.Namespace) error {
				return ns.ClaimContext(ctx, "l", "h", time.Minute) // queued behind any write of call
			},
		},
		{
			name: "Release",
			setup: func(ctx context.Context, ns *actors.Namespace) error {
				return ns.ClaimContext(ctx, "l", "h", time.Minute)
			},
			call: func(ctx context.Context, ns *actors.Namespace) error { return ns.Release(ctx, "l", "h") },
			after: func(ctx context.Context, ns *actors.Namespace) error {
				if err := ns.ClaimContext(ctx, "l", "other", time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
					return fmt.Errorf("claim by another holder: %v, want ErrClaimDenied: the lease was released", err)
				}
				return nil
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := start(t, connect(t)).Namespace("ns")
			ctx := testContext(t)
			if err := tt.setup(ctx, ns); err != nil {
				t.Fatal(err)
			}
			if err := tt.call(ended, ns); !errors.Is(err, context.Canceled) {
				t.Fatalf("with an ended context: %v, want context.Canceled", err)
			}
			if err := tt.after(ctx, ns); err != nil {
				t.Fatalf("the call with an ended context took effect: %v", err)
			}
		})
	}
}

func TestWaitUntilExpiredWithEndedContextStartsNoActor(t *testing.T) {
	m := start(t, connect(t))
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Namespace("ns").WaitUntilExpiredContext(ended, "l"); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitUntilExpiredContext = %v, want context.Canceled", err)
	}
	// Anything sent to the namespace would be ahead of this in the mailbox.
	if _, err := m.Namespace("other").Leases(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if m.Serving("ns") {
		t.Fatal("a wait with an ended context started the namespace's actor")
	}
}

func TestInvalidArgumentsAreRefusedAndStartNothing(t *testing.T) {
	m := start(t, connect(t))
	ctx := testContext(t)
	long := strings.Repeat("x", natskv.MaxNameBytes+1)
	tests := []struct {
		name      string
		namespace string
		call      func(*actors.Namespace) error
		names     string // what the error must name
	}{
		{"empty lease", "ns", func(n *actors.Namespace) error { return n.ClaimContext(ctx, "", "h", time.Second) }, "lease name"},
		{"lease with a dot", "ns", func(n *actors.Namespace) error { return n.ClaimContext(ctx, "a.b", "h", time.Second) }, "lease name"},
		{"lease too long", "ns", func(n *actors.Namespace) error { return n.ClaimContext(ctx, long, "h", time.Second) }, "lease name"},
		{"holder with a space", "ns", func(n *actors.Namespace) error { return n.ClaimContext(ctx, "l", "a b", time.Second) }, "holder name"},
		{"holder not UTF-8", "ns", func(n *actors.Namespace) error { return n.ClaimContext(ctx, "l", "\xff", time.Second) }, "holder name"},
		{"zero duration", "ns", func(n *actors.Namespace) error { return n.ClaimContext(ctx, "l", "h", 0) }, "duration"},
		{"negative duration", "ns", func(n *actors.Namespace) error { return n.ClaimContext(ctx, "l", "h", -time.Second) }, "duration"},
		{"duration over MaxDuration", "ns", func(n *actors.Namespace) error {
			return n.ClaimContext(ctx, "l", "h", actors.DefaultMaxDuration+1)
		}, "duration"},
		{"release by empty holder", "ns", func(n *actors.Namespace) error { return n.Release(ctx, "l", "") }, "holder name"},
		{"check of empty lease", "ns", func(n *actors.Namespace) error { return n.Token("", "h").Check(nil) }, "lease name"},
		{"wait on lease with a hash", "ns", func(n *actors.Namespace) error { return n.WaitUntilExpiredContext(ctx, "#") }, "lease name"},
		{"empty namespace", "", func(n *actors.Namespace) error { _, err := n.Leases(ctx); return err }, "namespace name"},
		{"page of an empty namespace", "", func(n *actors.Namespace) error { _, _, err := n.LeasesPage(ctx, "", 1); return err }, "namespace name"},
		{"page of no leases", "ns", func(n *actors.Namespace) error { _, _, err := n.LeasesPage(ctx, "", 0); return err }, "page limit"},
		{"page of a negative limit", "ns", func(n *actors.Namespace) error { _, _, err := n.LeasesPage(ctx, "", -1); return err }, "page limit"},
		{"namespace with a dollar", "a$", func(n *actors.Namespace) error { return n.ClaimContext(ctx, "l", "h", time.Second) }, "namespace name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(m.Namespace(tt.namespace))
			if !errors.Is(err, actors.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.names) {
				t.Fatalf("err = %v, want ErrInvalidArgument naming the %s", err, tt.names)
			}
			if m.Serving(tt.namespace) {
				t.Fatalf("an invalid call started namespace %q", tt.namespace)
			}
		})
	}
}

func TestFencingTokenStaysWhileExtendedAndGrowsWithEachNewHolder(t *testing.T) {
	clk := clocktest.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	nc := connect(t)
	m, err := actors.New(testContext(t), actors.Config{Conn: nc, Clock: clk, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
	ns := m.Namespace("ns")
	ctx := testContext(t)
	fence := func(holder string) uint64 {
		t.Helper()
		var f natskv.Fence
		if err := ns.Token("l", holder).Check(&f); err != nil {
			t.Fatalf("Check(%s): %v", holder, err)
		}
		return f.Revision
	}
	var last uint64
	var holder string
	for _, next := range []string{"a", "a", "b", "a", "a"} {
		extend := next == holder
		if !extend && holder != "" {
			// Let the last holder's lease lapse: past its expiry it is
			// not held, and the next holder can claim.
			clk.Advance(time.Minute + time.Nanosecond)
			if err := ns.Token("l", holder).Check(nil); !errors.Is(err, lease.ErrNotHeld) {
				t.Fatalf("Check after expiry = %v, want ErrNotHeld", err)
			}
			if err := ns.WaitUntilExpiredContext(ctx, "l"); err != nil {
				t.Fatal(err)
			}
		}
		holder = next
		if err := ns.ClaimContext(ctx, "l", holder, time.Minute); err != nil {
			t.Fatal(err)
		}
		got := fence(holder)
		switch {
		case extend && got != last:
			t.Fatalf("extension by %s moved the token %d -> %d", holder, last, got)
		case !extend && got <= last:
			t.Fatalf("new holder %s got token %d, not above %d", holder, got, last)
		}
		last = got
	}
}

// ClaimTenureContext and ClaimTenureFunc give the token a Check gives:
// the same for each extension of a tenure.
func TestClaimTenureGivesTheFencingToken(t *testing.T) {
	ns := start(t, connect(t)).Namespace("ns")
	ctx := testContext(t)
	claimed, err := ns.ClaimTenureContext(ctx, "l", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var f natskv.Fence
	if err := ns.Token("l", "a").Check(&f); err != nil || f.Revision != claimed {
		t.Fatalf("claim gave token %d; Check gives %d, %v", claimed, f.Revision, err)
	}
	extended, err := ns.ClaimTenureContext(ctx, "l", "a", 2*time.Minute)
	if err != nil || extended != claimed {
		t.Fatalf("extension gave token %d, %v; want the claim's %d", extended, err, claimed)
	}
	answered := make(chan uint64, 1)
	ns.ClaimTenureFunc(time.Now().Add(time.Minute), "l", "a", 3*time.Minute, func(fence uint64, err error) {
		if err != nil {
			t.Error(err)
		}
		answered <- fence
	})
	if got := <-answered; got != claimed {
		t.Fatalf("ClaimTenureFunc gave token %d, want %d", got, claimed)
	}
	if fence, err := ns.ClaimTenureContext(ctx, "l", "b", time.Minute); !errors.Is(err, lease.ErrClaimDenied) || fence != 0 {
		t.Fatalf("denied claim = %d, %v; want 0, ErrClaimDenied", fence, err)
	}
}

// A holder whose lease was released between two of its claims gets a new,
// greater token from the second: it is a new tenure, not an extension, and
// the token tells the holder so.
func TestClaimAfterAReleaseIsANewTenure(t *testing.T) {
	ns := start(t, connect(t)).Namespace("ns")
	ctx := testContext(t)
	first, err := ns.ClaimTenureContext(ctx, "l", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Release(ctx, "l", "a"); err != nil {
		t.Fatal(err)
	}
	second, err := ns.ClaimTenureContext(ctx, "l", "a", time.Minute)
	if err != nil || second <= first {
		t.Fatalf("claim after the release gave token %d, %v; want above %d", second, err, first)
	}
}

func TestStopIsSafeDuringCalls(t *testing.T) {
	m := start(t, connect(t))
	ns := m.Namespace("ns")
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 100 {
		wg.Go(func() { errs <- ns.ClaimContext(ctx, fmt.Sprint("l", i), "h", time.Minute) })
		wg.Go(func() { errs <- ns.Token(fmt.Sprint("l", i), "h").Check(nil) })
		wg.Go(func() { errs <- ns.WaitUntilExpiredContext(ctx, fmt.Sprint("l", i)) })
		if i%25 == 0 {
			wg.Go(func() { errs <- m.Stop(ctx) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		switch {
		case err == nil, errors.Is(err, actors.ErrStopped), errors.Is(err, lease.ErrNotHeld):
		default:
			t.Errorf("call during Stop: %v, want nil, ErrStopped or ErrNotHeld", err)
		}
	}
	if err := ns.ClaimContext(ctx, "l", "h", time.Minute); !errors.Is(err, actors.ErrStopped) {
		t.Fatalf("claim after Stop = %v, want ErrStopped", err)
	}
}
