// Command leader is an example service that runs work only while it is the
// leader, using leaseagent's election helper.
//
// Run a leaseagent (`go run ./cmd/leaseagent`), then two or more of these:
//
//	go run ./examples/leader --holder a
//	go run ./examples/leader --holder b
//
// One leads and prints a line every second; stop it (Ctrl-C) and another
// takes over at once, since the leader releases the lease on its way out.
// Kill it with SIGKILL instead and another takes over once the lease's
// duration has passed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/client"
)

func main() {
	url := flag.String("nats-url", nats.DefaultURL, "NATS server the leaseagent serves on")
	holder := flag.String("holder", hostname(), "this candidate's name")
	duration := flag.Duration("duration", 5*time.Second, "lease duration: how long a cut-off leader may go on")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *holder, *duration); err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, url, holder string, d time.Duration) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		return err
	}
	return c.Namespace("examples").Elect(ctx, client.Election{
		Lease:    "leader",
		Holder:   holder,
		Duration: d,
		Release:  true, // hand over at once when we stop
		Run: func(ctx context.Context) {
			// ctx is cancelled before our guarantee runs out if we cannot
			// renew: stop touching shared state when it is.
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case t := <-tick.C:
					fmt.Printf("%s: %s leads\n", t.Format(time.TimeOnly), holder)
				}
			}
		},
		OnStoppedLeading: func() { fmt.Printf("%s stopped leading\n", holder) },
		OnNewLeader:      func(h string) { fmt.Printf("new leader: %s\n", h) },
	})
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "candidate"
	}
	return h
}
