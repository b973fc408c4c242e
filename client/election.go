package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/protocol"
)

// ErrLeadershipLost is returned by Elect when the lease could not be renewed
// in time (the work's context was cancelled before the guarantee ran out),
// a renewal was denied (the error then also wraps lease.ErrClaimDenied), or
// the leader's tenure ended under it: the lease was released in its
// holder's name (by an operator, say) or expired, as its expired event or
// the new fencing token of the next renewal showed.
var ErrLeadershipLost = errors.New("leadership lost")

// ErrClaimReleased is wrapped, beside ctx's error, in what Elect returns
// when ctx ended while a claim of its was in doubt (in flight, failed
// without a denial, or answered too late) and Release gave the lease up
// after that claim had won it: the lease was held for a moment, by no
// leader.
var ErrClaimReleased = errors.New("a claim in doubt had won the lease; released")

// Election configures Elect: who runs for which lease, and what to do as
// leader.
type Election struct {
	// Lease and Holder name the lease that makes a leader, and this
	// candidate.
	Lease, Holder string

	// Duration is the lease's duration: how long a leader that cannot
	// reach the agent may go on. Required.
	Duration time.Duration

	// RenewEvery is how often the leader extends the lease; Duration/3 if
	// zero. It must leave time for retries before the guarantee runs out.
	RenewEvery time.Duration

	// Margin is how long before the guarantee runs out the work's context
	// is cancelled, to allow for the work to notice and for clock-rate
	// differences; Duration/10 if zero.
	Margin time.Duration

	// RetryEvery is how often a follower tries to claim the lease, beside
	// trying at once when the lease's expired event arrives; Duration/3 if
	// zero.
	RetryEvery time.Duration

	// Release gives the lease up when Elect returns while leading, so a
	// follower can take over at once instead of after Duration; also when
	// ctx ends while a claim that may have taken effect unseen (its call
	// failed or was answered too late) is the last one made: then Elect
	// waits at most Margin for the release, and its error wraps
	// ErrClaimReleased if the claim had won the lease.
	Release bool

	// Run is the leader's work, called once leadership is won, on its own
	// goroutine. Its context is cancelled when Elect's context ends, or
	// Margin before the guarantee runs out if the lease was not renewed.
	// Required.
	Run func(ctx context.Context)

	// OnStoppedLeading is called after Run has returned, before any
	// release.
	OnStoppedLeading func()

	// OnNewLeader is called with the holder of each new claim of the lease,
	// this candidate included, as the claimed events arrive. It runs on a
	// goroutine of the NATS connection, concurrently with Run and the
	// other callbacks, one call at a time; a call in progress when Elect
	// returns may still be running. Events are not stored: a claim made
	// before Elect subscribed, or whose event was lost, is not reported.
	OnNewLeader func(holder string)

	// OnRenewed is called after each successful claim or renewal with the
	// moment until which leadership is guaranteed (Run's context ends
	// Margin before it unless a later renewal succeeds). It is called on
	// Elect's goroutine, the first time before Run starts.
	OnRenewed func(until time.Time)
}

func (e *Election) validate() error {
	switch {
	case e.Duration <= 0:
		return fmt.Errorf("%w: Election.Duration: %v must be positive", protocol.ErrInvalidArgument, e.Duration)
	case e.Run == nil:
		return fmt.Errorf("%w: Election.Run: must not be nil", protocol.ErrInvalidArgument)
	case e.RenewEvery < 0 || e.Margin < 0 || e.RetryEvery < 0:
		return fmt.Errorf("%w: Election: RenewEvery, Margin and RetryEvery must not be negative", protocol.ErrInvalidArgument)
	}
	if e.RenewEvery == 0 {
		e.RenewEvery = e.Duration / 3
	}
	if e.Margin == 0 {
		e.Margin = e.Duration / 10
	}
	if e.RetryEvery == 0 {
		e.RetryEvery = e.Duration / 3
	}
	if e.RenewEvery == 0 || e.RetryEvery == 0 {
		// Timers of zero would claim in a busy loop.
		return fmt.Errorf("%w: Election.Duration: %v is too short to renew or retry in", protocol.ErrInvalidArgument, e.Duration)
	}
	if e.RenewEvery+e.Margin >= e.Duration {
		return fmt.Errorf("%w: Election: RenewEvery %v plus Margin %v leaves no time to renew within Duration %v",
			protocol.ErrInvalidArgument, e.RenewEvery, e.Margin, e.Duration)
	}
	return nil
}

// Elect runs for leadership of a lease until ctx ends: it claims the lease,
// and while it holds it runs e.Run and renews every e.RenewEvery.
//
// Every deadline is computed from when a claim *started*: a claim that
// started at t guarantees leadership until t+Duration, so Run's context is
// cancelled at t+Duration-Margin unless a later claim succeeded. A
// leader cut off from the agent therefore stops working before any other
// candidate can win the lease. A claim granted but answered after
// t+Duration-Margin does not start Run at all: Elect releases the lease
// and tries again later, as after a denial.
//
// A leader's tenure can also end under it: the lease released in its
// holder's name (an operator's `leaseagent release`), or expired. The
// lease's expired event, naming the holder and the tenure's fencing token,
// ends leadership at once; if that event is lost, the next renewal does
// (denied, or answered with a new fencing token: a new tenure, which Elect
// gives back).
//
// Elect returns ctx's error when ctx ends (wrapping ErrClaimReleased too if
// it gave up a claim in doubt: see Release), nil when Run returns by itself,
// and ErrLeadershipLost when a renewal was denied or could not be made in
// time, or the tenure ended under the leader; with Release, a failed release is returned if nothing else went
// wrong. It waits for Run to return before returning. While following it
// returns no error but ErrInvalidArgument (say, a Duration over the
// agent's maximum): denials and an unreachable agent make it try again
// until ctx ends.
//
// An invalid election (a bad namespace, lease or holder name, a Duration
// that is not positive or too short to divide, negative or too long
// intervals, a nil Run) is refused with an error wrapping
// protocol.ErrInvalidArgument before anything is sent.
func (n *Namespace) Elect(ctx context.Context, e Election) error {
	if err := e.validate(); err != nil {
		return err
	}
	// Checked here, before subscribing to the lease's events: an empty
	// name makes no subject, and would fail as if NATS were unavailable.
	if err := checkNames("namespace", n.name, "lease", e.Lease, "holder", e.Holder); err != nil {
		return fmt.Errorf("election: %w", err)
	}
	if err := ctx.Err(); err != nil { // subscribe to nothing
		return err
	}
	expired := make(chan struct{}, 1)
	ended := make(chan uint64, 1)
	subs, err := n.electionEvents(e, expired, ended)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	// mayHold is whether the last claim may have taken effect unseen (it
	// failed other than by denial, or was answered too late).
	mayHold := false
	stopped := func() error {
		// Within Margin: Elect's caller asked it to end, and a release
		// that cannot be made (an agent gone, a subject the credentials
		// may not use) must not hold it up for a request timeout.
		if e.Release && mayHold && n.releaseNow(&e, min(e.Margin, n.c.opts.requestTimeout)) == nil {
			return fmt.Errorf("%w: %w", ctx.Err(), ErrClaimReleased)
		}
		return ctx.Err()
	}
	for {
		start := time.Now()
		fence, err := n.ClaimTenure(ctx, e.Lease, e.Holder, e.Duration)
		mayHold = err == nil || !errors.Is(err, lease.ErrClaimDenied)
		switch {
		case err == nil && time.Now().Before(start.Add(e.Duration-e.Margin)):
			return n.lead(ctx, &e, tenure{start: start, fence: fence}, ended)
		case err == nil && ctx.Err() == nil:
			// Granted, but the answer came too late to act on: the
			// guarantee, counted from the claim's start, is over or ends
			// within the margin, and another candidate may hold the lease
			// already. Give it back, so that a candidate whose answers
			// come in time can lead, and try again later.
			if err := n.releaseNow(&e, n.c.opts.requestTimeout); err == nil || errors.Is(err, lease.ErrNotHeld) {
				mayHold = false
			}
		case ctx.Err() != nil:
			return stopped()
		case errors.Is(err, protocol.ErrInvalidArgument):
			return err
		}
		// Denied, or the agent is unreachable: try again later, or as
		// soon as the lease expires.
		t := time.NewTimer(e.RetryEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return stopped()
		case <-expired:
			t.Stop()
		case <-t.C:
		}
	}
}

// releaseNow gives the lease up, if this candidate holds it, waiting at
// most within; it returns the error, which callers may ignore.
func (n *Namespace) releaseNow(e *Election, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return n.Release(ctx, e.Lease, e.Holder)
}

// electionEvents subscribes to the lease's expired events, to try at once
// (expired) and to learn that this candidate's tenure ended (ended gets
// its fencing token), and to its claimed events (for OnNewLeader).
func (n *Namespace) electionEvents(e Election, expired chan struct{}, ended chan uint64) ([]*nats.Subscription, error) {
	prefix, nc := n.c.opts.prefix, n.c.nc
	onExpired, err := nc.Subscribe(protocol.EventSubject(prefix, protocol.EventExpired, n.name, e.Lease), func(m *nats.Msg) {
		select {
		case expired <- struct{}{}:
		default:
		}
		var ev messages.ExpiredEvent
		if proto.Unmarshal(m.Data, &ev) != nil || ev.GetHolder() != e.Holder {
			return
		}
		select {
		case <-ended: // keep the latest
		default:
		}
		select {
		case ended <- ev.GetRevision():
		default:
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%w: subscribe to expiry: %w", protocol.ErrUnavailable, err)
	}
	subs := []*nats.Subscription{onExpired}
	if e.OnNewLeader != nil {
		onClaimed, err := nc.Subscribe(protocol.EventSubject(prefix, protocol.EventClaimed, n.name, e.Lease), func(m *nats.Msg) {
			var ev messages.ClaimedEvent
			if proto.Unmarshal(m.Data, &ev) == nil {
				e.OnNewLeader(ev.GetHolder())
			}
		})
		if err != nil {
			_ = onExpired.Unsubscribe()
			return nil, fmt.Errorf("%w: subscribe to claims: %w", protocol.ErrUnavailable, err)
		}
		subs = append(subs, onClaimed)
	}
	return subs, nil
}

// tenure is a leader's hold on the lease: when the claim that won or last
// renewed it started, and its fencing token (0 from an agent that does not
// send one).
type tenure struct {
	start time.Time
	fence uint64
}

// lead runs the work while renewing, from the claim that won t. ended
// gets the fencing token of each of this candidate's tenures that ends.
func (n *Namespace) lead(ctx context.Context, e *Election, t tenure, ended <-chan uint64) error {
	start := t.start
	until := start.Add(e.Duration)
	if e.OnRenewed != nil {
		e.OnRenewed(until)
	}
	work, stopWork := context.WithCancel(ctx)
	defer stopWork()
	cutoff := time.AfterFunc(time.Until(until.Add(-e.Margin)), stopWork)
	defer cutoff.Stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(work)
	}()

	mistaken, result := n.renew(ctx, work, e, t, &until, cutoff, done, ended)
	stopWork()
	<-done
	if e.OnStoppedLeading != nil {
		e.OnStoppedLeading()
	}
	// A tenure a renewal began by mistake is given back whatever
	// e.Release says, so that other candidates need not wait out its
	// Duration; only now, with Run returned, or another leader's work
	// could overlap this one's.
	if (e.Release || mistaken) && time.Now().Before(until) {
		if err := n.releaseNow(e, n.c.opts.requestTimeout); err != nil && !errors.Is(err, lease.ErrNotHeld) && result == nil {
			result = fmt.Errorf("release %q: %w", e.Lease, err)
		}
	}
	return result
}

// leadEnded says why leading ended: ctx ended, or the cutoff passed
// without a renewal (the work's context is cancelled), or else the work
// returned by itself.
func leadEnded(ctx, work context.Context) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case work.Err() != nil:
		return ErrLeadershipLost
	}
	return nil
}

// renew extends the lease every RenewEvery until the work ends, ctx ends,
// a renewal is denied or cannot be made before the cutoff, or the tenure
// ends under it (its expired event arrives, or a renewal starts a new one:
// then mistaken is true, and until is that tenure's end).
func (n *Namespace) renew(ctx, work context.Context, e *Election, t tenure, until *time.Time, cutoff *time.Timer, done <-chan struct{}, ended <-chan uint64) (mistaken bool, err error) {
	next := time.NewTimer(time.Until(t.start.Add(e.RenewEvery)))
	defer next.Stop()
	for {
		select {
		case <-done:
			return false, leadEnded(ctx, work)
		case <-work.Done():
			return false, leadEnded(ctx, work)
		case fence := <-ended:
			if t.fence != 0 && fence == t.fence {
				return false, fmt.Errorf("%w: the lease was released or expired (tenure %d ended)", ErrLeadershipLost, fence)
			}
			continue // an earlier tenure's
		case <-next.C:
		}
		start := time.Now()
		// A renewal that has not succeeded by the cutoff is too late.
		rctx, cancel := context.WithDeadline(ctx, until.Add(-e.Margin))
		fence, err := n.ClaimTenure(rctx, e.Lease, e.Holder, e.Duration)
		cancel()
		switch {
		case err == nil && t.fence != 0 && fence != 0 && fence != t.fence:
			// Not an extension: the lease was released or expired since
			// the last claim, and another holder may have held it. lead
			// gives the tenure begun by mistake back once Run returns.
			*until = start.Add(e.Duration)
			return true, fmt.Errorf("%w: the lease was released or expired since the last renewal (tenure %d, now %d)", ErrLeadershipLost, t.fence, fence)
		case err == nil:
			if t.fence == 0 {
				t.fence = fence // an agent that sends tokens took over
			}
			*until = start.Add(e.Duration)
			cutoff.Reset(time.Until(until.Add(-e.Margin)))
			if e.OnRenewed != nil {
				e.OnRenewed(*until)
			}
			next.Reset(time.Until(start.Add(e.RenewEvery)))
		case errors.Is(err, lease.ErrClaimDenied):
			return false, fmt.Errorf("%w: %w", ErrLeadershipLost, err)
		case ctx.Err() != nil:
			return false, ctx.Err()
		default:
			// Unreachable for now: try again soon, until the cutoff.
			next.Reset(min(e.RenewEvery, n.c.opts.maxBackoff))
		}
	}
}
