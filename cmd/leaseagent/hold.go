package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/protocol"
)

func newHoldCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "hold NS LEASE HOLDER DURATION -- CMD [ARGS...]",
		Short: "Run a command while holding a lease",
		Long: "hold waits until HOLDER can claim LEASE, then runs CMD while renewing the lease\n" +
			"every DURATION/3 (DURATION is at least 100ms). If the lease is released in HOLDER's\n" +
			"name (leaseagent release) or a renewal is denied, CMD gets SIGTERM at once; if no\n" +
			"renewal can be made in time, DURATION/5 before the lease could pass to anyone\n" +
			"else. SIGKILL follows half of DURATION/5 later. When CMD exits the lease is released, and\n" +
			"hold exits with CMD's status; it exits 1 if the lease was lost. Like 'consul lock'\n" +
			"and flock(1).\n\n" +
			"With --timeout, hold gives up if it has not got the lease by then: exit 1 if another\n" +
			"holder holds it (as wait), 3 if no agent answered in time (or its answer came too\n" +
			"late: a claim so granted is released). If CMD is not found hold\n" +
			"exits 127, if it cannot be run 126, as env(1) does.\n\n" +
			"SIGINT or SIGTERM to hold while it waits for the lease stop it: exit 130 or 143.\n" +
			"While CMD runs, either reaches CMD as SIGTERM (SIGKILL DURATION/10 later if it has\n" +
			"not exited); hold waits for CMD to exit, releases the lease and exits with CMD's\n" +
			"status (143 if SIGTERM ended it). In a terminal, Ctrl-C also sends CMD itself SIGINT:\n" +
			"it runs in hold's process group. A second signal ends hold at once, leaving CMD\n" +
			"running and the lease held until it expires.",
		Example: "  leaseagent hold myapp cron host-1 30s -- ./nightly-job.sh",
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if dash != 4 || len(args) < 5 {
				return usagef(cmd, "want NS LEASE HOLDER DURATION -- CMD [ARGS...]")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := time.ParseDuration(args[3])
			if err != nil || d <= 0 {
				return usagef(cmd, "bad DURATION %q: want a positive Go duration such as 30s", args[3])
			}
			if d < minHoldDuration {
				return usagef(cmd, "DURATION %v is too short: at least %v, so that renewals every third of it reach the agent in time", d, minHoldDuration)
			}
			// It waits for the lease until interrupted, unless --timeout
			// is given; the command, once started, runs for as long as it
			// takes either way.
			var within time.Duration
			if cmd.Flags().Changed("timeout") {
				within = a.timeout
			}
			err = a.withNamespace(cmd, args[0], false, func(ctx context.Context, ns *client.Namespace) error {
				return hold(ctx, ns, args[1], args[2], d, within, args[4:])
			})
			// Stopped while waiting for the lease. (Once the command
			// runs, hold exits with its status, signalled or not.)
			var cmdExit *commandExit
			if err != nil && cmd.Context().Err() != nil && !errors.As(err, &cmdExit) {
				return fmt.Errorf("hold %s for %s: %w", leaseRef(args[0], args[1]), printable(args[2]), interrupted(cmd.Context()))
			}
			return err
		},
	}
}

// minHoldDuration is the shortest DURATION hold takes: a renewal every
// third of it must reach the agent and come back in time (as for
// --ownership-duration). Below it, every claim's answer would come too late
// to run the command on, and hold would claim and release in a loop.
const minHoldDuration = 100 * time.Millisecond

// commandExit is the exit status of the command hold ran: leaseagent exits
// with it, and prints nothing of its own.
type commandExit struct{ code int }

func (e *commandExit) Error() string { return fmt.Sprintf("command exited with status %d", e.code) }

// hold runs argv while holder holds the lease, as newHoldCommand describes.
// With within positive, it gives up if it has not got the lease by then.
func hold(ctx context.Context, ns *client.Namespace, leaseName, holder string, d, within time.Duration, argv []string) error {
	margin := d / 5
	var (
		status  = -1
		runErr  error
		mu      sync.Mutex // over started and gaveUp
		started bool
		gaveUp  bool
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if within > 0 {
		t := time.AfterFunc(within, func() {
			mu.Lock()
			defer mu.Unlock()
			if !started {
				gaveUp = true
				cancel()
			}
		})
		defer t.Stop()
	}
	err := ns.Elect(ctx, client.Election{
		Lease: leaseName, Holder: holder, Duration: d, Margin: margin, Release: true,
		Run: func(work context.Context) {
			mu.Lock()
			if gaveUp {
				mu.Unlock()
				return
			}
			started = true
			mu.Unlock()
			status, runErr = runCommand(work, argv, margin/2)
		},
	})
	mu.Lock()
	defer mu.Unlock()
	switch {
	case gaveUp:
		return notAcquired(ns, leaseName, holder, within, errors.Is(err, client.ErrClaimReleased))
	case !started:
		return err
	case runErr != nil:
		var notRun *commandNotRun
		if errors.As(runErr, &notRun) {
			return notRun // exit 126 or 127
		}
		return fmt.Errorf("run %s: %w", argv[0], runErr)
	case errors.Is(err, client.ErrLeadershipLost):
		return fmt.Errorf("%w: lost %s, stopped %s: %w", lease.ErrNotHeld, leaseRef(ns.Name(), leaseName), argv[0], err)
	case status != 0:
		return &commandExit{code: status}
	}
	return nil
}

// commandNotRun is hold's error when its command could not be started:
// exit 127 if it was not found, 126 if it was found but could not be run,
// as env(1), timeout(1) and the shells do.
type commandNotRun struct {
	name string
	code int
	err  error
}

func (e *commandNotRun) Error() string {
	return fmt.Sprintf("run %s: %v", e.name, e.err)
}

func (e *commandNotRun) Unwrap() error { return e.err }

// runCommand runs argv until it exits or ctx ends; then it sends SIGTERM,
// and SIGKILL after grace. It returns the command's exit status (128 plus
// the signal's number if a signal ended it), or a *commandNotRun if it
// could not start it.
func runCommand(ctx context.Context, argv []string, grace time.Duration) (int, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		code := exitCannotRun
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = exitNotFound
		}
		return -1, &commandNotRun{name: argv[0], code: code, err: err}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		kill := time.NewTimer(grace)
		select {
		case err = <-exited:
			kill.Stop()
		case <-kill.C:
			_ = cmd.Process.Kill()
			err = <-exited
		}
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return exit.ExitCode(), nil
	}
	return -1, err
}

// notAcquired is hold's error when it did not get the lease within
// --timeout. Unless Elect has (released), it first releases the lease, in
// case a claim of hold's reached the agent just as it gave up (the release
// queues behind it): then hold had it, too late, and says so (exit 3: the
// agent's answer did not come in time). Otherwise it asks who holds the
// lease: denied (exit 1, as wait's "still held") if another holder does;
// unavailable (exit 3) if no agent answers, or the lease is free. Each
// request waits at most notAcquiredAsk. A claim still on its way over the
// network when the release arrives is not caught: it holds the lease for
// its duration.
func notAcquired(ns *client.Namespace, leaseName, holder string, within time.Duration, released bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), min(within, notAcquiredAsk))
	defer cancel()
	prefix := fmt.Sprintf("hold %s for %s: not acquired within --timeout %v", leaseRef(ns.Name(), leaseName), printable(holder), within)
	if !released { // by Elect already (client.ErrClaimReleased)
		switch err := ns.Release(ctx, leaseName, holder); {
		case err == nil:
			released = true
		case !errors.Is(err, lease.ErrNotHeld):
			return fmt.Errorf("%s: %w", prefix, err)
		}
	}
	if released {
		return fmt.Errorf("%s: %w: a claim was granted as hold gave up; released", prefix, protocol.ErrUnavailable)
	}
	st, err := ns.Lease(ctx, leaseName)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", prefix, err)
	case !st.Held:
		return fmt.Errorf("%s: %w: the lease is free, but no claim got through in time", prefix, protocol.ErrUnavailable)
	}
	return fmt.Errorf("%s: %w: held by %s", prefix, lease.ErrClaimDenied, printable(st.Holder))
}

// notAcquiredAsk bounds how long hold, having given up, asks the agent
// who holds the lease.
const notAcquiredAsk = 2 * time.Second
