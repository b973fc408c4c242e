package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/natskv"
)

// Namespace is the leases of one namespace of a Manager. It implements
// lease.Claimer and lease.Checker; each method that waits has a twin that
// takes a context. The methods without one wait until the Manager answers
// or stops.
//
// Every method first checks its arguments: the namespace, lease and holder
// names (natskv.CheckName) and a claim's duration, which must be in
// (0, Config.MaxDuration], then Config.Policy. An invalid one fails the
// call with an error wrapping ErrInvalidArgument that names the problem,
// before anything is sent, so nothing changes and no actor starts.
//
// A method given a context that has already ended returns its error and
// sends nothing. One whose context ends while it waits returns the
// context's error at once, but what it asked for may still be done: a
// claim may hold the lease, a release may free it. That error, like
// ErrUnavailable, allows no inference about who holds the lease.
type Namespace struct {
	m    *Manager
	name string
}

var (
	_ lease.Claimer = (*Namespace)(nil)
	_ lease.Checker = (*Namespace)(nil)
)

// Name returns the namespace's name.
func (n *Namespace) Name() string { return n.name }

// Claim is ClaimContext without a deadline.
func (n *Namespace) Claim(leaseName, holderName string, duration time.Duration) error {
	return n.ClaimContext(context.Background(), leaseName, holderName, duration)
}

// ClaimContext claims the lease for the holder, or extends it if the holder
// holds it. On nil, the holder keeps the lease until at least duration after
// the call started. ErrClaimDenied means another holder holds it. A lease
// whose holder's time is up is expired and claimed in one call.
func (n *Namespace) ClaimContext(ctx context.Context, leaseName, holderName string, duration time.Duration) error {
	_, err := n.ClaimTenureContext(ctx, leaseName, holderName, duration)
	return err
}

// ClaimTenureContext is ClaimContext that also returns, on success, the
// fencing token of the holder's tenure (as a Token's Check gives it): the
// revision of the claim that made the holder the holder. Extensions of one
// tenure return the same token; a later tenure, a greater one. A holder
// that gets a new token from a claim it meant as an extension lost the
// lease in between (it was released, or expired): another holder may have
// held it meanwhile.
func (n *Namespace) ClaimTenureContext(ctx context.Context, leaseName, holderName string, duration time.Duration) (fence uint64, err error) {
	if err := n.checkClaim(leaseName, holderName, duration); err != nil {
		return 0, err
	}
	reply := newAnswer[opResult]()
	res, err := n.call(ctx, &claimRequest{lease: leaseName, holder: holderName, duration: duration, reply: reply}, reply.ch)
	if err != nil {
		return 0, err
	}
	return res.fence, res.err
}

// ClaimFunc is ClaimContext for callers that must not wait, such as a
// service answering requests: it returns at once, and answer is called
// once with what ClaimContext would return. If the call is not answered
// by deadline, answer gets context.DeadlineExceeded (deadlines are checked
// every 100ms); the claim may still take effect.
//
// answer runs on the namespace actor's goroutine; or on the caller's if
// the call fails before it reaches the actor, and on Stop's or the
// deadline check's if they answer first. It must not block.
func (n *Namespace) ClaimFunc(deadline time.Time, leaseName, holderName string, duration time.Duration, answer func(error)) {
	n.ClaimTenureFunc(deadline, leaseName, holderName, duration, func(_ uint64, err error) { answer(err) })
}

// ClaimTenureFunc is ClaimFunc with the fencing token of
// ClaimTenureContext: answer gets it, and nil, on success.
func (n *Namespace) ClaimTenureFunc(deadline time.Time, leaseName, holderName string, duration time.Duration, answer func(fence uint64, err error)) {
	if err := n.checkClaim(leaseName, holderName, duration); err != nil {
		answer(0, err)
		return
	}
	reply := newFuncAnswer(n.m.pending, deadline, func(r opResult) { answer(r.fence, r.err) }, opFailed)
	n.sendFunc(&claimRequest{lease: leaseName, holder: holderName, duration: duration, reply: reply}, reply)
}

func (n *Namespace) checkClaim(leaseName, holderName string, duration time.Duration) error {
	if err := n.checkLease(leaseName); err != nil {
		return err
	}
	if err := n.checkHolder(holderName); err != nil {
		return err
	}
	if duration <= 0 || duration > n.m.rt.cfg.MaxDuration {
		return fmt.Errorf("%w: duration %v is not in (0, %v]", ErrInvalidArgument, duration, n.m.rt.cfg.MaxDuration)
	}
	return n.policyDuration(duration)
}

// Release gives up a lease that holder holds, now: waiters wake and the
// expired event is published. ErrNotHeld means holder does not hold it.
func (n *Namespace) Release(ctx context.Context, leaseName, holderName string) error {
	if err := n.checkRelease(leaseName, holderName); err != nil {
		return err
	}
	reply := newAnswer[opResult]()
	res, err := n.call(ctx, &releaseRequest{lease: leaseName, holder: holderName, reply: reply}, reply.ch)
	if err != nil {
		return err
	}
	return res.err
}

// ReleaseFunc is Release as ClaimFunc is ClaimContext: it returns at once
// and answer, which must not block, is called once.
func (n *Namespace) ReleaseFunc(deadline time.Time, leaseName, holderName string, answer func(error)) {
	if err := n.checkRelease(leaseName, holderName); err != nil {
		answer(err)
		return
	}
	reply := newFuncAnswer(n.m.pending, deadline, func(r opResult) { answer(r.err) }, opFailed)
	n.sendFunc(&releaseRequest{lease: leaseName, holder: holderName, reply: reply}, reply)
}

func (n *Namespace) checkRelease(leaseName, holderName string) error {
	if err := n.checkLease(leaseName); err != nil {
		return err
	}
	return n.checkHolder(holderName)
}

// WaitUntilExpired is WaitUntilExpiredContext without a deadline.
func (n *Namespace) WaitUntilExpired(leaseName string) error {
	return n.WaitUntilExpiredContext(context.Background(), leaseName)
}

// WaitUntilExpiredContext returns nil once the lease is not held: at once
// if it is free, otherwise when it expires or is released. It returns ctx's
// error if ctx ends first.
func (n *Namespace) WaitUntilExpiredContext(ctx context.Context, leaseName string) error {
	if err := n.checkLease(leaseName); err != nil {
		return err
	}
	w := &waiter{reply: make(chan error, 1)}
	if err := n.m.sendContext(ctx, n.name, &waitRequest{lease: leaseName, waiter: w}); err != nil {
		return err
	}
	err, waitErr := await(ctx, n.m, w.reply)
	if waitErr != nil {
		if ctx.Err() != nil {
			// The waiter is registered, or about to be: take it back.
			_ = n.m.send(n.name, &cancelWait{lease: leaseName, waiter: w})
		}
		return waitErr
	}
	return err
}

// Leases returns the held leases of the namespace, with expiries on the
// Manager's clock. Each Info's Trapdoor accepts a *natskv.Fence. It copies
// the whole namespace; LeasesPage lists it a page at a time.
func (n *Namespace) Leases(ctx context.Context) (map[string]lease.Info, error) {
	if err := n.checkNamespace(); err != nil {
		return nil, err
	}
	reply := make(chan leasesResult, 1)
	if err := n.m.sendContext(ctx, n.name, &leasesRequest{reply: reply}); err != nil {
		return nil, err
	}
	res, err := await(ctx, n.m, reply)
	if err != nil {
		return nil, err
	}
	return res.leases, res.err
}

// LeasesPage returns a page of the namespace's held leases in name order
// (by the names' UTF-8 bytes): at most limit of those named after after,
// which need not name a lease, and whether more follow. Like Leases it
// leaves out a lease past its expiry, even before its removal. The actor
// answers from the name index of its cache (natskv.Client.LeasesAfter),
// without copying the namespace: a page costs as much as the leases it
// holds (and the expired ones skipped on the way), however many the
// namespace has, except the namespace's first, which builds the index.
// limit must be positive.
func (n *Namespace) LeasesPage(ctx context.Context, after string, limit int) ([]natskv.Held, bool, error) {
	if err := n.checkNamespace(); err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		return nil, false, fmt.Errorf("%w: page limit %d is not positive", ErrInvalidArgument, limit)
	}
	reply := make(chan leasesPageResult, 1)
	if err := n.m.sendContext(ctx, n.name, &leasesPageRequest{after: after, limit: limit, reply: reply}); err != nil {
		return nil, false, err
	}
	res, err := await(ctx, n.m, reply)
	if err != nil {
		return nil, false, err
	}
	return res.leases, res.more, res.err
}

// Lease returns what the namespace's actor knows of one lease now, and
// whether it is held (a lease past its expiry is not, even before it is
// removed). It reads no store.
func (n *Namespace) Lease(ctx context.Context, leaseName string) (lease.Info, bool, error) {
	if err := n.checkLease(leaseName); err != nil {
		return lease.Info{}, false, err
	}
	reply := make(chan leaseResult, 1)
	if err := n.m.sendContext(ctx, n.name, &leaseRequest{lease: leaseName, reply: reply}); err != nil {
		return lease.Info{}, false, err
	}
	res, err := await(ctx, n.m, reply)
	if err != nil {
		return lease.Info{}, false, err
	}
	return res.info, res.held, res.err
}

// Token returns a lease.Token for whether holderName holds leaseName. It is
// a *Token, whose CheckContext and CheckFunc are Check's context and
// callback twins. Its arguments are checked when it is checked.
func (n *Namespace) Token(leaseName, holderName string) lease.Token {
	return &Token{n: n, lease: leaseName, holder: holderName}
}

// Token reports whether a holder holds a lease; see lease.Token.
type Token struct {
	n             *Namespace
	lease, holder string
}

// Check is CheckContext without a deadline.
func (t *Token) Check(trapdoorKey interface{}) error {
	return t.CheckContext(context.Background(), trapdoorKey)
}

// CheckContext returns nil if the holder holds the lease now, and
// ErrNotHeld if not. It answers from the namespace actor's state, which
// sees every claim made through the Manager; on a miss it reloads the
// namespace from the store once and looks again (ErrUnavailable if that
// reload fails: the store may say otherwise). A non-nil trapdoorKey goes
// to the lease's Trapdoor: a *natskv.Fence receives the fencing token.
func (t *Token) CheckContext(ctx context.Context, trapdoorKey interface{}) error {
	if err := t.checkArgs(); err != nil {
		return err
	}
	reply := newAnswer[checkResult]()
	if err := t.n.m.sendContext(ctx, t.n.name, &checkRequest{lease: t.lease, holder: t.holder, reply: reply}); err != nil {
		return err
	}
	res, err := await(ctx, t.n.m, reply.ch)
	if err != nil {
		return err
	}
	if res.err != nil {
		return res.err
	}
	return res.info.Trapdoor(trapdoorKey)
}

// CheckFunc is CheckContext as ClaimFunc is ClaimContext: it returns at
// once and answer, which must not block, is called once, with the lease's
// Info if the holder holds it and the error CheckContext would return if
// not. The Info's Trapdoor accepts a *natskv.Fence.
func (t *Token) CheckFunc(deadline time.Time, answer func(lease.Info, error)) {
	if err := t.checkArgs(); err != nil {
		answer(lease.Info{}, err)
		return
	}
	reply := newFuncAnswer(t.n.m.pending, deadline,
		func(r checkResult) { answer(r.info, r.err) },
		func(err error) checkResult { return checkResult{err: err} })
	t.n.sendFunc(&checkRequest{lease: t.lease, holder: t.holder, reply: reply}, reply)
}

func (t *Token) checkArgs() error {
	if err := t.n.checkLease(t.lease); err != nil {
		return err
	}
	return t.n.checkHolder(t.holder)
}

// call sends a claim or release request and waits for its result; the
// error is the call's, before any result.
func (n *Namespace) call(ctx context.Context, msg any, reply chan opResult) (opResult, error) {
	if err := n.m.sendContext(ctx, n.name, msg); err != nil {
		return opResult{}, err
	}
	return await(ctx, n.m, reply)
}

// sendFunc sends the request of a Func call, failing the call if it
// cannot be sent.
func (n *Namespace) sendFunc(msg any, reply failer) {
	if err := n.m.send(n.name, msg); err != nil {
		reply.fail(err)
	}
}

func opFailed(err error) opResult { return opResult{err: err} }

// Refused returns why the Manager refuses every request for this
// namespace (its name is invalid, or Config.Policy does not allow it), or
// nil. It starts nothing and reads nothing.
func (n *Namespace) Refused() error { return n.checkNamespace() }

// RefusedClaim returns the error ClaimContext would fail with for these
// arguments before sending anything (an invalid name or duration, or one
// Config.Policy refuses), or nil. It starts nothing and reads nothing.
func (n *Namespace) RefusedClaim(leaseName, holderName string, duration time.Duration) error {
	return n.checkClaim(leaseName, holderName, duration)
}

// RefusedLease returns the error Lease and WaitUntilExpiredContext would
// fail with for leaseName before sending anything, or nil. It starts
// nothing and reads nothing.
func (n *Namespace) RefusedLease(leaseName string) error { return n.checkLease(leaseName) }

// RefusedHolder returns the error Release and a Token's CheckContext would
// fail with for these names before sending anything, or nil. It starts
// nothing and reads nothing.
func (n *Namespace) RefusedHolder(leaseName, holderName string) error {
	return n.checkRelease(leaseName, holderName)
}

// Full returns ErrUnavailable if the namespace has no actor and
// Config.MaxNamespaces namespaces have one already, so a request for it
// would be refused; nil otherwise. It starts nothing, and may be stale by
// the time the request is sent: the request itself is still refused if
// there is no room then.
func (n *Namespace) Full() error {
	if n.m.Serving(n.name) {
		return nil
	}
	if served := n.m.rt.served.Load(); served >= int64(n.m.rt.cfg.MaxNamespaces) {
		return tooManyNamespaces(int(served), n.name)
	}
	return nil
}

// checkNamespace, checkLease and checkHolder check a name, then what
// Config.Policy says of it.
func (n *Namespace) checkNamespace() error {
	if err := checkName("namespace", n.name); err != nil {
		return err
	}
	return n.policyNamespace()
}

func (n *Namespace) checkLease(name string) error {
	if err := n.checkNamespace(); err != nil {
		return err
	}
	if err := checkName("lease", name); err != nil {
		return err
	}
	return n.policyLease(name)
}

func (n *Namespace) checkHolder(name string) error {
	if err := checkName("holder", name); err != nil {
		return err
	}
	return n.policyHolder(name)
}

// checkName returns an error naming what is wrong with a name.
func checkName(what, name string) error {
	if err := natskv.CheckName(what, name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return nil
}
