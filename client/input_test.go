package client_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/internal/testenv"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// countingDialer dials TCP and counts every byte its connections write, so a
// test can tell whether a call sent anything at all (a request, a SUB).
type countingDialer struct{ written atomic.Int64 }

func (d *countingDialer) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, written: &d.written}, nil
}

type countingConn struct {
	net.Conn
	written *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written.Add(int64(n))
	return n, err
}

// countingClient is a client whose connection counts what it sends.
type countingClient struct {
	*client.Client
	nc     *nats.Conn
	dialer *countingDialer
}

func newCountingClient(t *testing.T, e *testenv.Env, opts ...client.Option) *countingClient {
	t.Helper()
	d := &countingDialer{}
	nc, err := nats.Connect(e.Server.ClientURL(), nats.SetCustomDialer(d))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c, err := client.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return &countingClient{Client: c, nc: nc, dialer: d}
}

// sent runs f and returns how many bytes it had the connection send or
// queue for sending.
func (c *countingClient) sent(t *testing.T, f func()) int64 {
	t.Helper()
	if err := c.nc.Flush(); err != nil { // nothing from before is in flight
		t.Fatal(err)
	}
	before := c.dialer.written.Load()
	f()
	buffered, err := c.nc.Buffered() // before written: a flush in between is counted twice, never missed
	if err != nil {
		t.Fatal(err)
	}
	return c.dialer.written.Load() - before + int64(buffered)
}

func TestCallsRefuseBadInputBeforeSending(t *testing.T) {
	e := testenv.Start(t)
	c := newCountingClient(t, e)
	n := c.Namespace("ns")
	long := strings.Repeat("x", natskv.MaxNameBytes+1)
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"claim with an empty lease":     func() error { return n.ClaimContext(ctx, "", "h", time.Minute) },
		"claim with a dotted lease":     func() error { return n.ClaimContext(ctx, "a.b", "h", time.Minute) },
		"claim with a too long lease":   func() error { return n.ClaimContext(ctx, long, "h", time.Minute) },
		"claim with a spaced holder":    func() error { return n.ClaimContext(ctx, "l", "h 1", time.Minute) },
		"claim for no time":             func() error { return n.ClaimContext(ctx, "l", "h", 0) },
		"claim for negative time":       func() error { return n.ClaimContext(ctx, "l", "h", -time.Second) },
		"claim in a bad namespace":      func() error { return c.Namespace("a b").ClaimContext(ctx, "l", "h", time.Minute) },
		"release with an empty lease":   func() error { return n.Release(ctx, "", "h") },
		"release with an empty holder":  func() error { return n.Release(ctx, "l", "") },
		"state of an empty lease":       func() error { _, err := n.Lease(ctx, ""); return err },
		"check with a bad holder":       func() error { return n.Token("l", "$h").(*client.Token).CheckContext(ctx, nil) },
		"check with a bad lease":        func() error { return n.Token("#", "h").(*client.Token).CheckContext(ctx, nil) },
		"check into a nil fence":        func() error { return n.Token("l", "h").(*client.Token).CheckContext(ctx, (*natskv.Fence)(nil)) },
		"check with an unsupported key": func() error { return n.Token("l", "h").(*client.Token).CheckContext(ctx, new(int)) },
		"list of a bad namespace":       func() error { _, err := c.Namespace("").Leases(ctx); return err },
		"wait for an empty lease":       func() error { return n.WaitUntilExpiredContext(ctx, "") },
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			if sent := c.sent(t, func() { err = call() }); sent != 0 {
				t.Errorf("sent %d bytes for bad input", sent)
			}
			if !errors.Is(err, protocol.ErrInvalidArgument) {
				t.Errorf("error = %v, want ErrInvalidArgument", err)
			}
		})
	}
}
func TestEndedContextSendsNothing(t *testing.T) {
	e := testenv.Start(t)
	c := newCountingClient(t, e)
	n := c.Namespace("ns")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, call := range map[string]func() error{
		"claim":   func() error { return n.ClaimContext(ctx, "l", "h", time.Minute) },
		"release": func() error { return n.Release(ctx, "l", "h") },
		"state":   func() error { _, err := n.Lease(ctx, "l"); return err },
		"list":    func() error { _, err := n.Leases(ctx); return err },
		"check":   func() error { return n.Token("l", "h").(*client.Token).CheckContext(ctx, nil) },
		"wait":    func() error { return n.WaitUntilExpiredContext(ctx, "l") },
		"elect": func() error {
			return n.Elect(ctx, client.Election{Lease: "l", Holder: "h", Duration: time.Second, Run: func(context.Context) {}})
		},
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			if sent := c.sent(t, func() { err = call() }); sent != 0 {
				t.Errorf("sent %d bytes with an ended context", sent)
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error = %v, want one wrapping context.Canceled", err)
			}
		})
	}
}
func TestElectRefusesBadNamesBeforeSending(t *testing.T) {
	e := testenv.Start(t)
	c := newCountingClient(t, e)
	run := func(context.Context) {}
	long := strings.Repeat("x", natskv.MaxNameBytes+1)
	for name, tc := range map[string]struct {
		namespace string
		election  client.Election
	}{
		"empty lease":     {"ns", client.Election{Lease: "", Holder: "h", Duration: time.Second, Run: run}},
		"too long lease":  {"ns", client.Election{Lease: long, Holder: "h", Duration: time.Second, Run: run}},
		"spaced holder":   {"ns", client.Election{Lease: "l", Holder: "h 1", Duration: time.Second, Run: run}},
		"empty namespace": {"", client.Election{Lease: "l", Holder: "h", Duration: time.Second, Run: run}},
		// Duration/3 would be zero: a renewal and retry loop without pause.
		"duration too short to divide": {"ns", client.Election{Lease: "l", Holder: "h", Duration: 2, Run: run}},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var err error
			if sent := c.sent(t, func() { err = c.Namespace(tc.namespace).Elect(ctx, tc.election) }); sent != 0 {
				t.Errorf("sent %d bytes for a bad election", sent)
			}
			if !errors.Is(err, protocol.ErrInvalidArgument) {
				t.Errorf("Elect = %v, want ErrInvalidArgument", err)
			}
		})
	}
}
