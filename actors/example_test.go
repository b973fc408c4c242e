package actors_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/natskv"
)

// Run a Manager in-process on an embedded server: claim a lease, see
// another holder denied, check the holder with its fencing token, and
// release the lease.
func Example() {
	dir, err := os.MkdirTemp("", "actors-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Config{Port: embedded.RandomPort, DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	ctx := context.Background()
	m, err := actors.New(ctx, actors.Config{
		Conn:     nc,
		Interest: srv.Interest,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Stop(ctx)

	jobs := m.Namespace("jobs")
	if err := jobs.ClaimContext(ctx, "nightly-backup", "worker-1", time.Minute); err != nil {
		log.Fatal(err)
	}
	err = jobs.ClaimContext(ctx, "nightly-backup", "worker-2", time.Minute)
	fmt.Println("worker-2 denied:", errors.Is(err, lease.ErrClaimDenied))

	// The fencing token goes with worker-1's writes to the resource the
	// lease protects, which refuses tokens lower than one it has seen.
	var fence natskv.Fence
	if err := jobs.Token("nightly-backup", "worker-1").Check(&fence); err != nil {
		log.Fatal(err)
	}
	fmt.Println("worker-1 holds it, fencing token > 0:", fence.Revision > 0)

	if err := jobs.Release(ctx, "nightly-backup", "worker-1"); err != nil {
		log.Fatal(err)
	}
	err = jobs.Token("nightly-backup", "worker-1").Check(nil)
	fmt.Println("after release, not held:", errors.Is(err, lease.ErrNotHeld))
	// Output:
	// worker-2 denied: true
	// worker-1 holds it, fencing token > 0: true
	// after release, not held: true
}
