package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/clock/clocktest"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/protocol"
)

// newIdleOwners returns owners for agent "a" (ownership for 10s, drift
// 1%) with no run loop, so nothing renews, its Manager and their clock.
func newIdleOwners(t *testing.T) (*owners, *actors.Manager, *clocktest.Fake) {
	t.Helper()
	nc := connectFresh(t)
	clk := clocktest.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mgr, err := actors.New(context.Background(), actors.Config{Conn: nc, Clock: clk, MaxSleep: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Stop(context.Background()) })
	// No run loop: nothing renews.
	o, err := newOwners(Ownership{AgentID: "a", Duration: 10 * time.Second, ClockDriftRate: 0.01}, mgr, log)
	if err != nil {
		t.Fatal(err)
	}
	return o, mgr, clk
}

// An owner that has not renewed stops answering at Duration*(1-drift)
// after its last successful write began, and unloads the namespace, so it
// cannot answer from state a new owner may change.
func TestAnOwnerThatCannotRenewStopsAnsweringInTime(t *testing.T) {
	o, mgr, clk := newIdleOwners(t)
	ctx := context.Background()
	r, err := o.route(ctx, "ns")
	if err != nil || !r.local {
		t.Fatalf("route of a free namespace = %+v, %v; want this agent", r, err)
	}
	if _, err := mgr.Namespace("ns").Leases(ctx); err != nil {
		t.Fatal(err)
	}

	clk.Advance(9900*time.Millisecond - time.Nanosecond)
	if !o.holds("ns", r.tenure) {
		t.Fatal("the owner stopped answering before Duration*(1-drift)")
	}
	clk.Advance(time.Nanosecond)
	if o.holds("ns", r.tenure) {
		t.Fatal("the owner still answers at Duration*(1-drift) without having renewed")
	}
	o.dropLapsed(ctx)
	if mgr.Serving("ns") {
		t.Fatal("the namespace's actor still runs after the ownership lapsed")
	}
	// Nobody else took it: the agent takes it back, as a new tenure.
	r2, err := o.route(ctx, "ns")
	if err != nil || !r2.local || r2.tenure == r.tenure {
		t.Fatalf("route after the lapse = %+v, %v; want this agent in a new tenure", r2, err)
	}
}

// An owner that has not renewed makes no store write from
// Duration*(1-drift) on, even before it unloads the namespace.
func TestAnOwnerThatCannotRenewStopsWritingInTime(t *testing.T) {
	o, mgr, clk := newIdleOwners(t)
	mgr.SetWriteGuard(o.mayWrite)
	ctx := context.Background()
	if _, err := o.route(ctx, "ns"); err != nil {
		t.Fatal(err)
	}
	n := mgr.Namespace("ns")
	if err := n.ClaimContext(ctx, "l", "h", time.Hour); err != nil {
		t.Fatalf("claim while owned: %v", err)
	}
	clk.Advance(9900 * time.Millisecond)
	if o.mayWrite("ns") {
		t.Fatal("the owner may still write at Duration*(1-drift) without having renewed")
	}
	if err := n.ClaimContext(ctx, "l2", "h", time.Hour); !errors.Is(err, actors.ErrUnavailable) {
		t.Fatalf("claim after the ownership lapsed = %v, want ErrUnavailable", err)
	}
}

// Routing happens before a request reaches the Manager, so a route that
// fails says the request was refused before anything was done: a client
// may send even a release again.
func TestRoutingFailuresAreRefusals(t *testing.T) {
	o, _, _ := newIdleOwners(t)
	ctx := context.Background()
	o.releaseAll(ctx) // the agent is stopping
	_, err := o.route(ctx, "ns")
	if !errors.Is(err, protocol.ErrUnavailable) || !errors.Is(err, protocol.ErrRefused) {
		t.Fatalf("route on a stopping agent = %v, want ErrUnavailable and ErrRefused", err)
	}
	if st := protocol.Status(err); !st.GetRefused() {
		t.Fatalf("its status %v is not marked refused", st)
	}
}

// connectFresh starts an embedded NATS server for the test and connects
// to it over TCP; both end with the test.
func connectFresh(t *testing.T) *nats.Conn {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
