package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/natskv"
)

func Example() {
	url, stop := runAgent() // what `leaseagent` does; see below
	defer stop()

	nc, err := nats.Connect(url)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	mysql := c.Namespace("application-leadership")

	// unit/0 leads mysql for at least a minute from the start of the call.
	if err := mysql.Claim("mysql", "unit/0", time.Minute); err != nil {
		log.Fatal(err)
	}
	// unit/1 is told no, and knows it does not lead.
	err = mysql.Claim("mysql", "unit/1", time.Minute)
	fmt.Println("unit/1 denied:", errors.Is(err, lease.ErrClaimDenied))

	// Before acting as leader, unit/0 checks, and gets its fencing token
	// to hand to whatever it writes to.
	var fence natskv.Fence
	if err := mysql.Token("mysql", "unit/0").Check(&fence); err == nil && fence.Revision > 0 {
		fmt.Println("unit/0 leads")
	}

	// unit/0 steps down; whoever waits for the lease wakes at once.
	ctx := context.Background()
	if err := mysql.Release(ctx, "mysql", "unit/0"); err != nil {
		log.Fatal(err)
	}
	if err := mysql.WaitUntilExpiredContext(ctx, "mysql"); err == nil {
		fmt.Println("mysql is free")
	}
	// Output:
	// unit/1 denied: true
	// unit/0 leads
	// mysql is free
}

// runAgent runs an embedded NATS server and the lease agent on it, in this
// process, and returns the URL to connect to.
func runAgent() (url string, stop func()) {
	dir, err := os.MkdirTemp("", "leaseagent-example")
	if err != nil {
		log.Fatal(err)
	}
	srv, err := embedded.Start(embedded.Config{Port: embedded.RandomPort, DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	nc, err := srv.Connect()
	if err != nil {
		log.Fatal(err)
	}
	m, err := actors.New(context.Background(), actors.Config{Conn: nc})
	if err != nil {
		log.Fatal(err)
	}
	svc, err := agent.Start(agent.Config{Conn: nc, Manager: m})
	if err != nil {
		log.Fatal(err)
	}
	return srv.ClientURL(), func() {
		_ = svc.Stop()
		_ = m.Stop(context.Background())
		nc.Close()
		srv.Shutdown()
		_ = os.RemoveAll(dir)
	}
}

// Elect runs a leader's work while it holds the lease, renewing it, and
// cancels the work's context before the guarantee runs out if renewals
// fail.
func ExampleNamespace_Elect() {
	url, stop := runAgent()
	defer stop()
	nc, err := nats.Connect(url)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	ns := c.Namespace("application-leadership")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = ns.Elect(ctx, client.Election{
		Lease: "mysql", Holder: "unit/0", Duration: 10 * time.Second,
		Release: true, // a follower takes over at once when this one stops
		Run: func(ctx context.Context) {
			// The leader's work; it must stop when ctx ends. This one
			// finishes by itself.
			fmt.Println("unit/0 leads")
		},
		OnStoppedLeading: func() { fmt.Println("unit/0 stopped leading") },
	})
	fmt.Println("Elect:", err) // nil: Run returned by itself

	st, err := ns.Lease(ctx, "mysql")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("held after Elect:", st.Held)
	// Output:
	// unit/0 leads
	// unit/0 stopped leading
	// Elect: <nil>
	// held after Elect: false
}
