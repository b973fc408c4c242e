package natskv_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/leaseagent/lease/natskv"
)

// What a Client does with outcomes that come back late or not at all, and
// which extensions it may answer without a write.

// ranUnapplied prepares a claim of name for holder and runs it: the record
// is in the store, its outcome not yet applied.
func ranUnapplied(t *testing.T, c *natskv.Client, name, holder string) *natskv.Write {
	t.Helper()
	w, err := c.PrepareClaim(name, req(holder, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	w.Run(context.Background())
	return w
}

// releasedBeforeItsOutcome runs a claim of "l" by "a" without applying
// its outcome, then reads it back and releases the lease: the Write's
// outcome is older than what the cache holds.
func releasedBeforeItsOutcome(t *testing.T, c *natskv.Client) *natskv.Write {
	t.Helper()
	w := ranUnapplied(t, c, "l", "a")
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	if err := c.ReleaseLeaseContext(context.Background(), "l", "a"); err != nil {
		t.Fatal(err)
	}
	return w
}

// An outcome applied after the cache has read later writes of its key
// (as after a restart of the actor that sent it) puts nothing back.
func TestALateOutcomeDoesNotUndoLaterWrites(t *testing.T) {
	s := newStore(t)
	c := s.client(t, "ns", newClock())
	w := releasedBeforeItsOutcome(t, c)
	if err := c.ClaimLease("l", req("b", time.Hour)); err != nil {
		t.Fatal(err)
	}
	mustBeInvalid(t, c.Apply(w))
	if holder, _, ok := c.Holder("l"); !ok || holder != "b" {
		t.Fatalf("after a late outcome the cache says %q (held %v), want b", holder, ok)
	}
}

// Likewise when what was read since is a marker the server has removed.
func TestALateOutcomeDoesNotReviveAForgottenLease(t *testing.T) {
	s := newStoreWith(t, false, natskv.BucketConfig{DeleteMarkerTTL: time.Second})
	c := s.client(t, "ns", newClock())
	w := releasedBeforeItsOutcome(t, c)
	s.awaitGone(t, "ns", "l")
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	mustBeInvalid(t, c.Apply(w))
	if holder, _, ok := c.Holder("l"); ok {
		t.Fatalf("after a late outcome the cache says %q holds a lease the store does not have", holder)
	}
}

// A lost race's outcome carries the key's state as read just after the
// race. Applied after the cache has read a later state (the winner has
// released since), it must not put the winner back.
func TestALateLostRaceDoesNotUndoALaterRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reread func(t *testing.T, c *natskv.Client)
	}{
		{"full refresh", func(t *testing.T, c *natskv.Client) {
			if err := c.Refresh(); err != nil {
				t.Fatal(err)
			}
		}},
		{"changes", func(t *testing.T, c *natskv.Client) {
			snap, err := c.LoadChanges(context.Background(), c.Seen())
			if err != nil {
				t.Fatal(err)
			}
			if err := c.ApplySnapshot(snap); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			clock := newClock()
			c, winner := s.client(t, "ns", clock), s.client(t, "ns", clock)
			if err := winner.ClaimLease("l", req("winner", time.Hour)); err != nil {
				t.Fatal(err)
			}
			w := ranUnapplied(t, c, "l", "loser") // loses: expects the key empty
			if err := winner.ReleaseLeaseContext(context.Background(), "l", "winner"); err != nil {
				t.Fatal(err)
			}
			tc.reread(t, c)
			mustBeInvalid(t, c.Apply(w))
			if holder, _, ok := c.Holder("l"); ok {
				t.Fatalf("after a late lost race the cache says %q holds a released lease", holder)
			}
			if err := c.ClaimLease("l", req("next", time.Hour)); err != nil {
				t.Fatalf("claim of the released lease: %v", err)
			}
		})
	}
}

// An outcome whose revision a reload has already read installs the
// write's own record: held by its holder, expiring a duration after the
// write started.
func TestAnOutcomeAlreadyReadIsApplied(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	w := ranUnapplied(t, c, "l", "a")
	clock.Advance(time.Minute)
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(w); err != nil {
		t.Fatal(err)
	}
	mustHold(t, c, "l", "a", epoch.Add(time.Hour))
}

// A write whose outcome was lost may have landed: the holder's next
// extension is written (and finds the lease gone), not answered from the
// cache.
func TestAnExtensionAfterALostOutcomeIsWritten(t *testing.T) {
	for _, tc := range extensions("a") {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			c := s.client(t, "ns", newClock())
			if err := c.ClaimLease("l", req("a", time.Minute)); err != nil {
				t.Fatal(err)
			}
			w, err := c.PrepareRelease("l", "a")
			if err != nil {
				t.Fatal(err)
			}
			w.Run(context.Background()) // the lease is released in the store...
			natskv.LoseOutcome(w, context.DeadlineExceeded)
			if err := c.Apply(w); !errors.Is(err, context.DeadlineExceeded) { // ...but nobody heard
				t.Fatalf("Apply = %v, want the lost outcome's error", err)
			}
			mustBeInvalid(t, tc.extend(c))
			if holder, _, ok := c.Holder("l"); ok {
				t.Fatalf("cache says %q holds a released lease", holder)
			}
		})
	}
}

// A record this Client did not write may have been observed earlier by the
// writer that will expire it: an extension of it is written, never kept in
// memory or skipped, so that the revision moves and a late write of that
// writer (an old owner) fails.
func TestAnExtensionOfAnObservedRecordIsWritten(t *testing.T) {
	for _, tc := range extensions("x") {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			clock := newClock()
			old := s.client(t, "ns", clock)
			if err := old.ClaimLease("l", req("x", time.Minute)); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Minute + time.Second)
			late, err := old.PrepareExpire("l") // decided, not yet sent
			if err != nil {
				t.Fatal(err)
			}
			next := s.client(t, "ns", clock) // takes over: loads afresh
			if err := next.Refresh(); err != nil {
				t.Fatal(err)
			}
			before := s.lastRevision(t)
			if err := tc.extend(next); err != nil {
				t.Fatal(err)
			}
			if after := s.lastRevision(t); after == before {
				t.Fatal("the extension of an observed record was not written")
			}
			late.Run(context.Background())
			mustBeInvalid(t, old.Apply(late))
		})
	}
}

// extension is one way to extend lease "l" for a holder.
type extension struct {
	name   string
	extend func(c *natskv.Client) error
}

// extensions are the ways an extension that would not move the expiry
// later can be answered without a write: ExtendLease for less time than
// is left, and PrepareLocalExtend for the record's duration.
func extensions(holder string) []extension {
	return []extension{
		{"ExtendLease", func(c *natskv.Client) error { return c.ExtendLease("l", req(holder, time.Second)) }},
		{"PrepareLocalExtend", func(c *natskv.Client) error {
			return applyPrepared(c)(c.PrepareLocalExtend("l", req(holder, time.Minute)))
		}},
	}
}

// applyPrepared returns a function that runs a prepared Write and applies
// it to c.
func applyPrepared(c *natskv.Client) func(*natskv.Write, error) error {
	return func(w *natskv.Write, err error) error {
		if err != nil {
			return err
		}
		w.Run(context.Background())
		return c.Apply(w)
	}
}
