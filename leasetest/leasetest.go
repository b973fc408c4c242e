// Package leasetest is a conformance suite for implementations of
// lease.Claimer and lease.Checker: the same scenarios, in one place, run
// against every implementation (the in-process actors.Manager and the
// NATS client over a running agent).
package leasetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/natskv"
)

// Namespace is what the suite needs of an implementation: lease.Claimer
// and lease.Checker, their context twins, and a release.
type Namespace interface {
	lease.Claimer
	lease.Checker
	ClaimContext(ctx context.Context, leaseName, holderName string, duration time.Duration) error
	WaitUntilExpiredContext(ctx context.Context, leaseName string) error
	Release(ctx context.Context, leaseName, holderName string) error
}

// Target is one implementation under test, fresh for each scenario.
type Target struct {
	// Namespace returns the leases of a namespace.
	Namespace func(name string) Namespace
	// Advance moves the implementation's clock forward.
	Advance func(d time.Duration)
}

// patience bounds each wait for something that must happen.
const patience = 10 * time.Second

// Run runs every scenario against targets made by newTarget.
func Run(t *testing.T, newTarget func(t *testing.T) Target) {
	scenarios := []struct {
		name string
		run  func(t *testing.T, tg Target)
	}{
		{"ClaimFreeLease", claimFreeLease},
		{"ExtendByHolder", extendByHolder},
		{"DenyOtherHolder", denyOtherHolder},
		{"CheckWithoutKey", checkWithoutKey},
		{"CheckWithFenceKey", checkWithFenceKey},
		{"CheckWithUnsupportedKey", checkWithUnsupportedKey},
		{"WaitOnFreeLease", waitOnFreeLease},
		{"WaitWokenByExpiry", waitWokenByExpiry},
		{"WaitWokenByRelease", waitWokenByRelease},
		{"WaitCancelled", waitCancelled},
		{"ReleaseByNonHolder", releaseByNonHolder},
		{"TwoNamespaces", twoNamespaces},
	}
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) { s.run(t, newTarget(t)) })
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return c
}

func mustClaim(t *testing.T, n Namespace, name, holder string, d time.Duration) {
	t.Helper()
	if err := n.ClaimContext(ctx(t), name, holder, d); err != nil {
		t.Fatalf("claim %q for %q: %v", name, holder, err)
	}
}

func mustHold(t *testing.T, n Namespace, name, holder string) {
	t.Helper()
	if err := n.Token(name, holder).Check(nil); err != nil {
		t.Fatalf("check %q held by %q: %v", name, holder, err)
	}
}

func mustNotHold(t *testing.T, n Namespace, name, holder string) {
	t.Helper()
	if err := n.Token(name, holder).Check(nil); !errors.Is(err, lease.ErrNotHeld) {
		t.Fatalf("check %q held by %q = %v, want ErrNotHeld", name, holder, err)
	}
}

func claimFreeLease(t *testing.T, tg Target) {
	n := tg.Namespace("ns")
	if err := n.Claim("l", "h", time.Minute); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	mustHold(t, n, "l", "h")
	mustNotHold(t, n, "l", "other")
}

func extendByHolder(t *testing.T, tg Target) {
	n := tg.Namespace("ns")
	mustClaim(t, n, "l", "h", time.Minute)
	tg.Advance(50 * time.Second)
	mustClaim(t, n, "l", "h", time.Minute)
	tg.Advance(50 * time.Second) // past the first claim's minute
	mustHold(t, n, "l", "h")
}

func denyOtherHolder(t *testing.T, tg Target) {
	n := tg.Namespace("ns")
	mustClaim(t, n, "l", "a", time.Minute)
	if err := n.ClaimContext(ctx(t), "l", "b", time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
		t.Fatalf("claim by b = %v, want ErrClaimDenied", err)
	}
	mustHold(t, n, "l", "a")
	mustNotHold(t, n, "l", "b")
}

func checkWithoutKey(t *testing.T, tg Target) {
	n := tg.Namespace("ns")
	mustNotHold(t, n, "l", "h")
	mustClaim(t, n, "l", "h", time.Minute)
	mustHold(t, n, "l", "h")
}

func checkWithFenceKey(t *testing.T, tg Target) {
	n := tg.Namespace("ns")
	mustClaim(t, n, "l", "a", time.Minute)
	var first natskv.Fence
	if err := n.Token("l", "a").Check(&first); err != nil || first.Revision == 0 {
		t.Fatalf("check with fence: %v, fence %+v", err, first)
	}
	if err := n.Release(ctx(t), "l", "a"); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, n, "l", "b", time.Minute)
	var second natskv.Fence
	if err := n.Token("l", "b").Check(&second); err != nil {
		t.Fatal(err)
	}
	if second.Revision <= first.Revision || second.Key != first.Key || second.Bucket != first.Bucket {
		t.Fatalf("fences %+v then %+v: want the same key and a larger revision", first, second)
	}
}

func checkWithUnsupportedKey(t *testing.T, tg Target) {
	n := tg.Namespace("ns")
	mustClaim(t, n, "l", "h", time.Minute)
	if err := n.Token("l", "h").Check("key"); err == nil {
		t.Fatal("Check with a string key = nil, want an error")
	}
}

func waitOnFreeLease(t *testing.T, tg Target) {
	n := tg.Namespace("ns")
	if err := n.WaitUntilExpiredContext(ctx(t), "free"); err != nil {
		t.Fatalf("wait on a free lease: %v", err)
	}
}

// startWait starts WaitUntilExpired and checks it has not returned after a
// round trip through the implementation.
func startWait(t *testing.T, n Namespace, name, holder string) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- n.WaitUntilExpiredContext(ctx(t), name) }()
	mustHold(t, n, name, holder)
	select {
	case err := <-done:
		t.Fatalf("wait returned %v while %q holds the lease", err, holder)
	default:
	}
	return done
}

func expectReturn(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("wait did not return")
	}
}

func waitWokenByExpiry(t *testing.T, tg Target) {
	n := tg.Namespace("ns")
	mustClaim(t, n, "l", "h", time.Minute)
	done := startWait(t, n, "l", "h")
	tg.Advance(time.Minute + time.Millisecond)
	expectReturn(t, done)
	mustNotHold(t, n, "l", "h")
}

func waitWokenByRelease(t *testing.T, tg Target) {
	n := tg.Namespace("ns")
	mustClaim(t, n, "l", "h", time.Minute)
	done := startWait(t, n, "l", "h")
	if err := n.Release(ctx(t), "l", "h"); err != nil {
		t.Fatalf("release: %v", err)
	}
	expectReturn(t, done)
}

func waitCancelled(t *testing.T, tg Target) {
	n := tg.Namespace("ns")
	mustClaim(t, n, "l", "h", time.Minute)
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.WaitUntilExpiredContext(c, "l") }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait = %v, want context.Canceled", err)
		}
	case <-time.After(patience):
		t.Fatal("cancelled wait did not return")
	}
}

func releaseByNonHolder(t *testing.T, tg Target) {
	n := tg.Namespace("ns")
	mustClaim(t, n, "l", "h", time.Minute)
	if err := n.Release(ctx(t), "l", "other"); !errors.Is(err, lease.ErrNotHeld) {
		t.Fatalf("release by a non-holder = %v, want ErrNotHeld", err)
	}
	mustHold(t, n, "l", "h")
}

func twoNamespaces(t *testing.T, tg Target) {
	a, b := tg.Namespace("ns-a"), tg.Namespace("ns-b")
	mustClaim(t, a, "l", "ha", time.Minute)
	mustClaim(t, b, "l", "hb", 2*time.Minute)
	mustNotHold(t, a, "l", "hb")
	tg.Advance(time.Minute + time.Millisecond)
	if err := a.WaitUntilExpiredContext(ctx(t), "l"); err != nil {
		t.Fatal(err)
	}
	mustHold(t, b, "l", "hb")
}
