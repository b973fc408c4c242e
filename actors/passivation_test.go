package actors

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leaseagent/lease/protocol"
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
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, protocol.ErrRefused) || !strings.Contains(err.Error(), "MaxNamespaces") {
		t.Fatalf("third namespace = %v, want ErrUnavailable and ErrRefused, naming MaxNamespaces", err)
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

// unloadRace pauses one Manager.send, once armed, at the stage given (see
// hooks.sending), and holds the old actor of an unloaded namespace before
// it can take its PoisonPill (on the unloading message), so that a request
// sent meanwhile can only land in its mailbox behind it or not at all.
type unloadRace struct {
	armed          atomic.Bool
	paused, resume chan struct{}
	unloadingGate  chan struct{}
}

func newUnloadRace(cfg *Config, checked bool) *unloadRace {
	r := &unloadRace{paused: make(chan struct{}), resume: make(chan struct{}), unloadingGate: make(chan struct{})}
	cfg.hooks.sending = func(_ string, c bool) {
		if c == checked && r.armed.CompareAndSwap(true, false) {
			close(r.paused)
			<-r.resume
		}
	}
	cfg.hooks.receive = func(_ string, msg any) {
		if _, ok := msg.(*unloading); ok {
			<-r.unloadingGate
		}
	}
	return r
}

// claimDuringUnload claims l for h, which holds it, with the claim paused
// in Manager.send while the namespace is unloaded, and returns its answer.
func (r *unloadRace) claimDuringUnload(h *harness, n *Namespace) error {
	h.t.Helper()
	r.armed.Store(true)
	answered := make(chan error, 1)
	go func() { answered <- n.Claim("l", "h", time.Minute) }() // no deadline
	<-r.paused
	if err := h.m.Unload(h.ctx(), "ns"); err != nil {
		h.t.Fatal(err)
	}
	close(r.resume)
	close(r.unloadingGate)
	select {
	case err := <-answered:
		return err
	case <-time.After(patience):
		h.t.Fatal("the claim sent while the namespace was unloaded was never answered")
		return nil
	}
}

// A request that Manager.send found the namespace's actor live for, and is
// sending to it when the namespace is unloaded, is in the old actor's
// mailbox before the PoisonPill, and answered by it.
func TestRequestSentToActorBeingUnloadedIsAnswered(t *testing.T) {
	var r *unloadRace
	h := newHarness(t, func(cfg *Config) { r = newUnloadRace(cfg, true) })
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	if err := r.claimDuringUnload(h, n); err != nil {
		t.Fatalf("extension sent to the old actor = %v", err)
	}
	if h.m.Serving("ns") {
		t.Fatal("a new actor serves ns: the claim did not go to the old one")
	}
}

// A request that found the namespace's actor in Manager.send, but finds it
// retired when about to send, goes through the manager to a new actor.
func TestRequestFindingActorRetiredGoesToNewActor(t *testing.T) {
	var r *unloadRace
	h := newHarness(t, func(cfg *Config) { r = newUnloadRace(cfg, false) })
	n := h.start("ns")
	h.claim(n, "l", "h", time.Minute)
	if err := r.claimDuringUnload(h, n); err != nil {
		t.Fatalf("claim routed to a new actor = %v", err)
	}
	if !h.m.Serving("ns") {
		t.Fatal("no new actor for ns")
	}
}
