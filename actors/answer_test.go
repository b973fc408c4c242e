package actors

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/natskv"
)

// funcCall is the outcome of a Func call, and how many times it was
// answered.
type funcCall struct {
	done  chan error
	calls atomic.Int32
}

func newFuncCall() *funcCall { return &funcCall{done: make(chan error, 10)} }

func (c *funcCall) answer(err error) {
	c.calls.Add(1)
	c.done <- err
}

func (c *funcCall) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-c.done:
		return err
	case <-time.After(patience):
		t.Fatal("Func call not answered")
		return nil
	}
}

// claimFunc, releaseFunc and checkFunc make a Func call and wait for its
// answer, so that they read like their context twins.
func claimFunc(t *testing.T, n *Namespace, leaseName, holder string, d time.Duration) error {
	t.Helper()
	c := newFuncCall()
	n.ClaimFunc(time.Now().Add(patience), leaseName, holder, d, c.answer)
	return c.wait(t)
}

func releaseFunc(t *testing.T, n *Namespace, leaseName, holder string) error {
	t.Helper()
	c := newFuncCall()
	n.ReleaseFunc(time.Now().Add(patience), leaseName, holder, c.answer)
	return c.wait(t)
}

func checkFunc(t *testing.T, n *Namespace, leaseName, holder string) (uint64, error) {
	t.Helper()
	c := newFuncCall()
	var fence natskv.Fence
	n.Token(leaseName, holder).(*Token).CheckFunc(time.Now().Add(patience), func(info lease.Info, err error) {
		if err == nil {
			err = info.Trapdoor(&fence)
		}
		c.answer(err)
	})
	return fence.Revision, c.wait(t)
}

// The Func calls decide as their context twins do.
func TestFuncCallsAnswerAsTheirContextTwins(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	if err := claimFunc(t, n, "l", "a", time.Minute); err != nil {
		t.Fatalf("claim of a free lease: %v", err)
	}
	h.mustHold(n, "l", "a")
	before := h.lastRevision()
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"extend by holder", func() error { return claimFunc(t, n, "l", "a", 2*time.Minute) }, nil},
		{"claim by other holder", func() error { return claimFunc(t, n, "l", "b", time.Minute) }, lease.ErrClaimDenied},
		{"check by holder", func() error { _, err := checkFunc(t, n, "l", "a"); return err }, nil},
		{"check by other holder", func() error { _, err := checkFunc(t, n, "l", "b"); return err }, lease.ErrNotHeld},
		{"release by other holder", func() error { return releaseFunc(t, n, "l", "b") }, lease.ErrNotHeld},
		{"claim with bad lease name", func() error { return claimFunc(t, n, "a.b", "a", time.Minute) }, ErrInvalidArgument},
		{"check with bad holder", func() error { _, err := checkFunc(t, n, "l", ""); return err }, ErrInvalidArgument},
		{"release with bad lease name", func() error { return releaseFunc(t, n, "", "a") }, ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if after := h.lastRevision(); after != before+1 {
		t.Fatalf("revision went %d -> %d; want one write, the extension", before, after)
	}
	revision, err := checkFunc(t, n, "l", "a")
	if err != nil || revision == 0 {
		t.Fatalf("check gave fence revision %d, %v; want the lease's revision", revision, err)
	}
	if err := releaseFunc(t, n, "l", "a"); err != nil {
		t.Fatalf("release by holder: %v", err)
	}
	h.expectClaimed("ns", "l", "a")
	h.expectExpired("ns", "l", "a")
}

// A Func call whose write does not finish by its deadline is answered
// with context.DeadlineExceeded, once: the write's outcome, when it comes,
// is not a second answer.
func TestFuncCallPastItsDeadlineIsAnsweredOnce(t *testing.T) {
	var entered <-chan struct{}
	release := make(chan struct{})
	h := newHarness(t, func(cfg *Config) {
		cfg.hooks.sweepEvery = time.Millisecond
		entered = holdWrite(cfg, "stuck", release)
	})
	n := h.start("ns")
	c := newFuncCall()
	n.ClaimFunc(time.Now().Add(10*time.Millisecond), "stuck", "h", time.Minute, c.answer)
	<-entered
	if err := c.wait(t); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("claim past its deadline = %v, want context.DeadlineExceeded", err)
	}
	close(release)
	// The write landed after all. The actor finishes the claim right after
	// publishing its event; a check it answers after that is proof the
	// claim had its last chance to be answered again.
	h.expectClaimed("ns", "stuck", "h")
	h.mustHold(n, "stuck", "h")
	if got := c.calls.Load(); got != 1 {
		t.Fatalf("answered %d times, want 1", got)
	}
}

func TestStopAnswersPendingFuncCalls(t *testing.T) {
	var entered <-chan struct{}
	h := newHarness(t, func(cfg *Config) { entered = holdWrite(cfg, "stuck", nil) }) // until Stop abandons it
	n := h.start("ns")
	c := newFuncCall()
	n.ClaimFunc(time.Now().Add(time.Hour), "stuck", "h", time.Minute, c.answer)
	<-entered
	if err := h.m.Stop(h.ctx()); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(t); !errors.Is(err, ErrStopped) {
		t.Fatalf("pending claim = %v, want ErrStopped", err)
	}
	if err := claimFunc(t, n, "l", "h", time.Minute); !errors.Is(err, ErrStopped) {
		t.Fatalf("claim after Stop = %v, want ErrStopped", err)
	}
	if got := c.calls.Load(); got != 1 {
		t.Fatalf("pending claim answered %d times, want 1", got)
	}
}

// The actor, Stop and the deadline sweep may race to answer a call: one
// answer reaches the caller.
func TestAnswerIsSentOnce(t *testing.T) {
	p := newPendingCalls(time.Hour)
	var calls atomic.Int32
	a := newFuncAnswer(p, time.Now(), func(opResult) { calls.Add(1) }, opFailed)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { a.send(opResult{}) })
		wg.Go(func() { a.fail(ErrStopped) })
	}
	wg.Go(p.sweep)
	wg.Go(func() { p.stop(ErrStopped) })
	wg.Wait()
	if got := calls.Load(); got != 1 {
		t.Fatalf("answered %d times, want 1", got)
	}
	if len(p.calls) != 0 {
		t.Fatalf("%d calls still pending after their answer", len(p.calls))
	}
}
