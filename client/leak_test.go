package client_test

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/embedded"
)

// goroutinesSettleTo waits until at most want goroutines run (with want 0:
// until the count has not fallen for 100ms), polling because the
// goroutines of closed connections exit on their own time; it returns the
// last count.
func goroutinesSettleTo(want int) int {
	deadline := time.Now().Add(10 * time.Second)
	n, low, since := runtime.NumGoroutine(), runtime.NumGoroutine(), time.Now()
	for time.Now().Before(deadline) {
		if want > 0 && n <= want || want == 0 && time.Since(since) > 100*time.Millisecond {
			break
		}
		<-time.After(2 * time.Millisecond)
		if n = runtime.NumGoroutine(); n < low {
			low, since = n, time.Now()
		}
	}
	return n
}

// Starting and stopping the whole agent (server, manager, service) and a
// client, after using them, leaves no goroutine behind.
func TestStartAndStopLeakNoGoroutines(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cycle := func() {
		srv, err := embedded.Start(embedded.Config{Port: embedded.RandomPort, DataDir: t.TempDir(), NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown()
		conn, err := srv.Connect()
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		m, err := actors.New(context.Background(), actors.Config{Conn: conn, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = m.Stop(context.Background()) }()
		svc, err := agent.Start(agent.Config{Conn: conn, Manager: m, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = svc.Stop() }()

		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		c, err := client.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		n := c.Namespace("ns")
		ctx := context.Background()
		if err := n.ClaimContext(ctx, "l", "h", time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := n.Token("l", "h").Check(nil); err != nil {
			t.Fatal(err)
		}
		if err := n.Release(ctx, "l", "h"); err != nil {
			t.Fatal(err)
		}
		if err := n.WaitUntilExpiredContext(ctx, "l"); err != nil {
			t.Fatal(err)
		}
	}
	cycle() // warm up what lives for the process (timers, pools)
	before := goroutinesSettleTo(0)
	for range 3 {
		cycle()
	}
	if after := goroutinesSettleTo(before); after > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before, %d after three start/stop cycles\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}
