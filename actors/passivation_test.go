package actors

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// passivations reports each namespace the manager stops for being idle.
func passivations(cfg *Config) <-chan string {
	ch := make(chan string, 100)
	cfg.hooks.passivated = func(ns string) { ch <- ns }
	return ch
}

func TestIdleNamespaceStopsAndStartsAgainOnDemand(t *testing.T) {
	var stopped <-chan string
	h := newHarness(t, func(cfg *Config) { stopped = passivations(cfg) })
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	if err := n.Release(h.ctx(), "l", "h"); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(DefaultIdleTimeout)
	select {
	case ns := <-stopped:
		if ns != "ns" {
			t.Fatalf("stopped %q", ns)
		}
	case <-time.After(patience):
		t.Fatal("idle namespace was not stopped")
	}
	// The next request starts it again, from the store.
	h.claim(n, "l", "h2", time.Minute)
	h.mustHold(n, "l", "h2")
}

func TestNamespaceHoldingLeasesIsNotStopped(t *testing.T) {
	var stopped <-chan string
	h := newHarness(t, func(cfg *Config) { stopped = passivations(cfg) })
	n := h.start("ns")
	h.claim(n, "l", "h", 2*DefaultIdleTimeout)
	h.clock.Advance(DefaultIdleTimeout + time.Second)
	// A round trip to the namespace (its timer's tick came first), then one
	// through the manager (any idle message from it came first).
	h.mustHold(n, "l", "h")
	h.start("other")
	select {
	case ns := <-stopped:
		t.Fatalf("namespace %q stopped while it holds a lease", ns)
	default:
	}
}

func TestTooManyNamespaces(t *testing.T) {
	var stopped <-chan string
	h := newHarness(t, func(cfg *Config) {
		cfg.MaxNamespaces = 2
		stopped = passivations(cfg)
	})
	a, b := h.start("a"), h.start("b")
	h.claim(a, "l", "h", time.Minute)
	h.claim(b, "l", "h", time.Hour)
	err := h.m.Namespace("c").ClaimContext(h.ctx(), "l", "h", time.Minute)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "MaxNamespaces") {
		t.Fatalf("third namespace = %v, want ErrUnavailable naming MaxNamespaces", err)
	}
	// Once a's lease has expired and it has been idle long enough, it
	// makes room.
	h.clock.Advance(time.Minute + 1)
	h.expectClaimed("a", "l", "h")
	h.expectClaimed("b", "l", "h")
	h.expectExpired("a", "l", "h")
	h.clock.Advance(DefaultIdleTimeout)
	select {
	case ns := <-stopped:
		if ns != "a" {
			t.Fatalf("stopped %q, want a", ns)
		}
	case <-time.After(patience):
		t.Fatal("idle namespace a was not stopped")
	}
	h.claim(h.m.Namespace("c"), "l", "h", time.Minute)
}

// An unloaded namespace forgets what it knew: the next actor loads the
// store and treats every lease by the clock rule, as a new owner would.
func TestUnloadedNamespaceStartsAgainFromTheStore(t *testing.T) {
	h := newHarness(t)
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	h.clock.Advance(30 * time.Second)
	if err := h.m.Unload(h.ctx(), "ns"); err != nil {
		t.Fatal(err)
	}
	if h.m.Serving("ns") {
		t.Fatal("Serving(ns) after Unload")
	}
	h.start("ns")
	if !h.m.Serving("ns") {
		t.Fatal("no actor for ns after a call")
	}
	// The first actor would expire the lease a minute after the claim;
	// the new one a minute after it first saw the record.
	h.clock.Advance(31 * time.Second)
	h.mustHold(n, "l", "h")
	if err := h.m.Unload(h.ctx(), "nothing-here"); err != nil {
		t.Fatalf("Unload of a namespace with no actor: %v", err)
	}
}
