package actors

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// answer delivers the outcome of one call, once: to the channel its caller
// waits on, or to the function a caller that does not wait gave (the Func
// methods). The namespace actor, the Manager's Stop and the deadline sweep
// may all try to answer a call; the first one does, the others do nothing.
type answer[T any] struct {
	sent atomic.Bool
	ch   chan T // buffered: sending never blocks
	fn   func(T)
	// With fn: the call's entry in the Manager's pending calls, and how an
	// error becomes a T.
	pending *pendingCalls
	failed  func(error) T
}

func newAnswer[T any]() *answer[T] { return &answer[T]{ch: make(chan T, 1)} }

// send answers the call unless it has been answered; a nil answer (an op
// the actor started itself) needs none.
func (a *answer[T]) send(v T) (sent bool) {
	if a == nil || !a.sent.CompareAndSwap(false, true) {
		return false
	}
	if a.fn == nil {
		a.ch <- v
		return true
	}
	a.pending.remove(a)
	a.fn(v)
	return true
}

func (a *answer[T]) fail(err error) { a.send(a.failed(err)) }

// failer is an answer awaiting a function's outcome, of any type.
type failer interface{ fail(error) }

// pendingCalls are the Func calls not yet answered, with their deadlines:
// nothing else would answer one whose request the actor never saw (the
// Manager stopped, or its actor stopped with the request in its mailbox).
type pendingCalls struct {
	mu    sync.Mutex
	calls map[failer]time.Time
	every time.Duration // how often the deadlines are checked
	timer *time.Timer   // set while a call is pending
	done  bool          // Stop has failed them all
}

// sweepEvery is how often pending Func calls are checked against their
// deadlines: a call is answered with context.DeadlineExceeded at most this
// long after its deadline.
const sweepEvery = 100 * time.Millisecond

func newPendingCalls(every time.Duration) *pendingCalls {
	return &pendingCalls{calls: make(map[failer]time.Time), every: every}
}

// newFuncAnswer returns the answer of a Func call, pending until deadline.
// After stop it fails the call at once.
func newFuncAnswer[T any](p *pendingCalls, deadline time.Time, fn func(T), failed func(error) T) *answer[T] {
	a := &answer[T]{fn: fn, pending: p, failed: failed}
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		a.fail(ErrStopped)
		return a
	}
	p.calls[a] = deadline
	if p.timer == nil {
		p.timer = time.AfterFunc(p.every, p.sweep)
	}
	p.mu.Unlock()
	return a
}

func (p *pendingCalls) remove(f failer) {
	p.mu.Lock()
	delete(p.calls, f)
	p.mu.Unlock()
}

// sweep fails the calls whose deadline has passed, and comes back while
// any are pending.
func (p *pendingCalls) sweep() {
	now := time.Now()
	var late []failer
	p.mu.Lock()
	for f, deadline := range p.calls {
		if !now.Before(deadline) {
			late = append(late, f)
		}
	}
	p.timer = nil
	if len(p.calls) > len(late) && !p.done {
		p.timer = time.AfterFunc(p.every, p.sweep)
	}
	p.mu.Unlock()
	for _, f := range late {
		f.fail(context.DeadlineExceeded)
	}
}

// stop fails every pending call with err, and every call made after.
func (p *pendingCalls) stop(err error) {
	p.mu.Lock()
	p.done = true
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	all := make([]failer, 0, len(p.calls))
	for f := range p.calls {
		all = append(all, f)
	}
	p.mu.Unlock()
	for _, f := range all {
		f.fail(err)
	}
}
