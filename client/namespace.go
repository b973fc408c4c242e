package client

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// Namespace is the leases of one namespace, reached through the agent.
type Namespace struct {
	c    *Client
	name string
}

var (
	_ lease.Claimer = (*Namespace)(nil)
	_ lease.Checker = (*Namespace)(nil)
)

// Name returns the namespace's name.
func (n *Namespace) Name() string { return n.name }

// Claim is ClaimContext bounded by the call timeout.
func (n *Namespace) Claim(leaseName, holderName string, duration time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), n.c.opts.callTimeout)
	defer cancel()
	return n.ClaimContext(ctx, leaseName, holderName, duration)
}

// ClaimContext claims the lease for the holder, or extends it if the holder
// holds it. On nil, the holder keeps the lease until at least duration
// after the call started. ErrClaimDenied means another holder holds it.
func (n *Namespace) ClaimContext(ctx context.Context, leaseName, holderName string, duration time.Duration) error {
	_, err := n.ClaimTenure(ctx, leaseName, holderName, duration)
	return err
}

// ClaimTenure is ClaimContext that also returns, on success, the fencing
// token of the holder's tenure (what a Token's Check gives as
// natskv.Fence.Revision). Every extension of a tenure returns the same
// token. A holder renewing by claims that gets a different one lost the
// lease in between, because it was released or expired, and another
// holder may have held it meanwhile: Elect ends leadership then. The token
// is 0 from an agent older than the field.
func (n *Namespace) ClaimTenure(ctx context.Context, leaseName, holderName string, duration time.Duration) (fence uint64, err error) {
	if err := checkNames("lease", leaseName, "holder", holderName); err != nil {
		return 0, err
	}
	if duration <= 0 {
		return 0, fmt.Errorf("%w: duration %v must be positive", protocol.ErrInvalidArgument, duration)
	}
	in := &messages.ClaimRequest{Lease: leaseName, Holder: holderName, Duration: durationpb.New(duration)}
	out := &messages.ClaimReply{}
	if err := n.c.call(ctx, protocol.OpClaim, n.name, in, out, true); err != nil {
		return 0, err
	}
	return out.GetRevision(), nil
}

// Release gives up a lease that holder holds, now. ErrNotHeld means holder
// does not hold it.
func (n *Namespace) Release(ctx context.Context, leaseName, holderName string) error {
	if err := checkNames("lease", leaseName, "holder", holderName); err != nil {
		return err
	}
	in := &messages.ReleaseRequest{Lease: leaseName, Holder: holderName}
	return n.c.call(ctx, protocol.OpRelease, n.name, in, &messages.ReleaseReply{}, false)
}

// LeaseInfo is a held lease as the agent reports it.
type LeaseInfo struct {
	Lease  string
	Holder string
	// ExpiresIn is how long from the agent's reply the lease may expire.
	ExpiresIn time.Duration
	// Revision is the fencing token of the holder's tenure.
	Revision uint64
}

// Leases returns the held leases of the namespace, by name. A namespace
// too large for one reply is read a page at a time; the pages are read one
// after another, so the result is no snapshot: a lease claimed or released
// meanwhile may be in it or not.
func (n *Namespace) Leases(ctx context.Context) ([]LeaseInfo, error) {
	var leases []LeaseInfo
	for after := ""; ; {
		var out messages.ListReply
		if err := n.c.call(ctx, protocol.OpList, n.name, &messages.ListRequest{After: after}, &out, true); err != nil {
			return nil, err
		}
		for _, l := range out.GetLeases() {
			leases = append(leases, LeaseInfo{
				Lease: l.GetLease(), Holder: l.GetHolder(),
				ExpiresIn: l.GetExpiresIn().AsDuration(), Revision: l.GetRevision(),
			})
		}
		switch next := out.GetNext(); {
		case next == "":
			return leases, nil
		case next <= after:
			return nil, fmt.Errorf("%w: list %s: the next page starts at %q, not after %q", protocol.ErrInternal, n.name, next, after)
		default:
			after = next
		}
	}
}

// State is whether a lease is held and by whom.
type State struct {
	Held   bool
	Holder string
	// Revision is the fencing token of the holder's tenure.
	Revision uint64
	// ExpiresIn is how long from the agent's reply the lease may expire.
	ExpiresIn time.Duration
}

// Lease asks the agent whether a lease is held. The answer is a fact about
// a moment in the past, like a Token's Check.
func (n *Namespace) Lease(ctx context.Context, leaseName string) (State, error) {
	if err := checkNames("lease", leaseName); err != nil {
		return State{}, err
	}
	var out messages.StateReply
	if err := n.c.call(ctx, protocol.OpState, n.name, &messages.StateRequest{Lease: leaseName}, &out, true); err != nil {
		return State{}, err
	}
	return State{Held: out.GetHeld(), Holder: out.GetHolder(), Revision: out.GetRevision(), ExpiresIn: out.GetExpiresIn().AsDuration()}, nil
}

// WaitUntilExpired is WaitUntilExpiredContext with no deadline.
func (n *Namespace) WaitUntilExpired(leaseName string) error {
	return n.WaitUntilExpiredContext(context.Background(), leaseName)
}

// WaitUntilExpiredContext returns nil once the lease is not held: at once
// if it is free, otherwise when its expired event arrives or a periodic
// re-ask finds it free. It returns an error wrapping ctx's error if ctx
// ends first.
func (n *Namespace) WaitUntilExpiredContext(ctx context.Context, leaseName string) error {
	if err := checkNames("lease", leaseName, "namespace", n.name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil { // subscribe to nothing
		return fmt.Errorf("wait for %q: %w", leaseName, err)
	}
	events := make(chan struct{}, 1)
	sub, err := n.c.nc.Subscribe(protocol.EventSubject(n.c.opts.prefix, protocol.EventExpired, n.name, leaseName), func(*nats.Msg) {
		select {
		case events <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("%w: subscribe to expiry of %q: %w", protocol.ErrUnavailable, leaseName, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The subscription must reach the server before we ask, or an expiry
	// between the answer and the subscription would be missed.
	if err := n.flush(ctx); err != nil {
		return fmt.Errorf("%w: subscribe to expiry of %q: %w", protocol.ErrUnavailable, leaseName, err)
	}
	poll := time.NewTicker(n.c.opts.waitPoll)
	defer poll.Stop()
	for {
		st, err := n.Lease(ctx, leaseName)
		if err != nil {
			return err
		}
		if !st.Held {
			return nil
		}
		select {
		case <-events:
			return nil
		case <-poll.C:
		case <-ctx.Done():
			return fmt.Errorf("wait for %q: %w", leaseName, ctx.Err())
		}
	}
}

// flush waits until the server has seen everything sent so far, or ctx
// ends, or the request timeout passes.
func (n *Namespace) flush(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, n.c.opts.requestTimeout)
	defer cancel()
	return n.c.nc.FlushWithContext(fctx)
}

// Token returns a lease.Token for whether holderName holds leaseName. It
// is a *Token: assert to it for CheckContext, which takes a context.
func (n *Namespace) Token(leaseName, holderName string) lease.Token {
	return &Token{n: n, lease: leaseName, holder: holderName}
}

// Token reports whether a holder holds a lease; see lease.Token.
type Token struct {
	n             *Namespace
	lease, holder string
}

// Check is CheckContext bounded by the call timeout.
func (t *Token) Check(trapdoorKey interface{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), t.n.c.opts.callTimeout)
	defer cancel()
	return t.CheckContext(ctx, trapdoorKey)
}

// CheckContext asks the agent whether the holder holds the lease: nil if
// so, ErrNotHeld if not. A *natskv.Fence trapdoor key receives the fencing
// token; any other non-nil key, or a nil *natskv.Fence, is refused with
// ErrInvalidArgument before anything is sent.
func (t *Token) CheckContext(ctx context.Context, trapdoorKey interface{}) error {
	switch k := trapdoorKey.(type) {
	case nil:
	case *natskv.Fence:
		if k == nil {
			return fmt.Errorf("%w: trapdoor key is a nil *natskv.Fence", protocol.ErrInvalidArgument)
		}
	default:
		return fmt.Errorf("%w: trapdoor key of type %T not supported; use *natskv.Fence", protocol.ErrInvalidArgument, trapdoorKey)
	}
	if err := checkNames("lease", t.lease, "holder", t.holder); err != nil {
		return err
	}
	var out messages.CheckReply
	if err := t.n.c.call(ctx, protocol.OpCheck, t.n.name, &messages.CheckRequest{Lease: t.lease, Holder: t.holder}, &out, true); err != nil {
		return err
	}
	if f, ok := trapdoorKey.(*natskv.Fence); ok {
		*f = natskv.Fence{Bucket: out.GetBucket(), Key: out.GetKey(), Revision: out.GetRevision()}
	}
	return nil
}

// checkNames returns an error wrapping protocol.ErrInvalidArgument that
// names the first invalid name of whats and names, given in pairs ("lease",
// leaseName, ...), so bad input is refused before anything is sent: with
// no agent running it would otherwise be retried, then reported as
// unavailable.
func checkNames(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := natskv.CheckName(pairs[i], pairs[i+1]); err != nil {
			return fmt.Errorf("%w: %w", protocol.ErrInvalidArgument, err)
		}
	}
	return nil
}
