package natskv_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease/natskv"
)

// lastMessage returns the last message the bucket's stream holds for lease
// name of namespace ns, or nil if it holds none.
func (s *testStore) lastMessage(t testing.TB, ns, name string) *jetstream.RawStreamMsg {
	t.Helper()
	st, err := s.js.Stream(context.Background(), "KV_"+natskv.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(context.Background(), "$KV."+natskv.DefaultBucket+"."+ns+"."+name)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// awaitGone waits until the stream holds nothing for lease name of
// namespace ns. The server removes a message whose TTL ran out on its own
// clock and tells nobody, so there is no event to wait for: it looks every
// 20 ms, for at most 10 s.
func (s *testStore) awaitGone(t testing.TB, ns, name string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.lastMessage(t, ns, name) != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("lease %s/%s: the marker is still in the bucket 10 s on", ns, name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The delete marker of a release or an expiry, written alone or in a
// batch, carries the bucket's DeleteMarkerTTL for the server, in seconds;
// with a negative TTL it carries none.
func TestDeleteMarkerCarriesTheTTL(t *testing.T) {
	release := func(c *natskv.Client, b *natskv.Bucket) error {
		return c.ReleaseLeaseContext(context.Background(), "l", "h")
	}
	expire := func(c *natskv.Client, b *natskv.Bucket) error { return c.ExpireLease("l") }
	batched := func(c *natskv.Client, b *natskv.Bucket) error {
		// A batch needs two writes: the expiry and a release of another
		// lease.
		if err := c.ClaimLease("m", req("h", time.Minute)); err != nil {
			return err
		}
		expiry, err := c.PrepareExpire("l")
		if err != nil {
			return err
		}
		release, err := c.PrepareRelease("m", "h")
		if err != nil {
			return err
		}
		if stats := b.RunBatch(context.Background(), []*natskv.Write{expiry, release}); stats.Batches != 1 {
			return fmt.Errorf("RunBatch sent %+v, want one batch", stats)
		}
		return errors.Join(c.Apply(expiry), c.Apply(release))
	}
	tests := []struct {
		name  string
		ttl   time.Duration
		end   func(*natskv.Client, *natskv.Bucket) error
		want  string
		wantN int // Nats-TTL headers
	}{
		{"release, default TTL", 0, release, "120", 1},
		{"expiry, TTL set", 90 * time.Second, expire, "90", 1},
		{"expiry in a batch", 90 * time.Second, batched, "90", 1},
		{"markers kept for ever", -1, release, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStoreWith(t, false, natskv.BucketConfig{DeleteMarkerTTL: tt.ttl})
			clock := newClock()
			c := s.client(t, "ns", clock)
			if err := c.ClaimLease("l", req("h", time.Minute)); err != nil {
				t.Fatal(err)
			}
			if m := s.lastMessage(t, "ns", "l"); m.Header.Get(jetstream.MsgTTLHeader) != "" {
				t.Fatalf("the record carries Nats-TTL %q: it would vanish while held", m.Header.Get(jetstream.MsgTTLHeader))
			}
			clock.Advance(2 * time.Minute)
			if err := tt.end(c, s.bucket); err != nil {
				t.Fatal(err)
			}
			m := s.lastMessage(t, "ns", "l")
			if m == nil || m.Header.Get("KV-Operation") != "DEL" {
				t.Fatalf("last message %+v, want a delete marker", m)
			}
			if got := m.Header.Values(jetstream.MsgTTLHeader); len(got) != tt.wantN || m.Header.Get(jetstream.MsgTTLHeader) != tt.want {
				t.Fatalf("marker's Nats-TTL = %q, want %q", got, tt.want)
			}
		})
	}
}

// Once the server has removed a marker, nothing of the lease is left in
// the bucket or, after a full load, in the cache; the lease can be claimed
// again, at a higher revision than any before, so fencing tokens still only
// grow.
func TestAReleasedLeaseIsForgottenAfterTheMarkerTTL(t *testing.T) {
	s := newStoreWith(t, false, natskv.BucketConfig{DeleteMarkerTTL: time.Second})
	c := s.client(t, "ns", newClock())
	if err := c.ClaimLease("l", req("h1", time.Minute)); err != nil {
		t.Fatal(err)
	}
	first := fence(t, c, "l")
	if err := c.ReleaseLeaseContext(context.Background(), "l", "h1"); err != nil {
		t.Fatal(err)
	}
	if natskv.CachedKeys(c) != 1 {
		t.Fatalf("cache holds %d keys after the release, want the marker's", natskv.CachedKeys(c))
	}
	s.awaitGone(t, "ns", "l")
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	if n := natskv.CachedKeys(c); n != 0 {
		t.Fatalf("cache holds %d keys after a full load, want none", n)
	}
	if err := c.ClaimLease("l", req("h2", time.Minute)); err != nil {
		t.Fatalf("claim after the marker went: %v", err)
	}
	if again := fence(t, c, "l"); again <= first {
		t.Fatalf("fencing token %d after the marker went, want more than %d", again, first)
	}
}

// A Client that has not seen the marker go expects it, loses the race it
// finds, reads that the key is gone, and wins the next claim.
func TestClaimOverAMarkerThatWentUnseen(t *testing.T) {
	s := newStoreWith(t, false, natskv.BucketConfig{DeleteMarkerTTL: time.Second})
	c := s.client(t, "ns", newClock())
	if err := c.ClaimLease("l", req("h1", time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := c.ReleaseLeaseContext(context.Background(), "l", "h1"); err != nil {
		t.Fatal(err)
	}
	s.awaitGone(t, "ns", "l")
	mustBeInvalid(t, c.ClaimLease("l", req("h2", time.Minute)))
	if err := c.ClaimLease("l", req("h2", time.Minute)); err != nil {
		t.Fatalf("second claim: %v", err)
	}
	mustHold(t, c, "l", "h2", epoch.Add(time.Minute))
}

// A marker's TTL removes the marker only: a lease claimed again after its
// release is held past the marker's TTL. Another lease released at the
// same time shows when the TTL has run out.
func TestMarkerTTLLeavesTheNextRecord(t *testing.T) {
	s := newStoreWith(t, false, natskv.BucketConfig{DeleteMarkerTTL: time.Second})
	c := s.client(t, "ns", newClock())
	for _, name := range []string{"again", "witness"} {
		if err := c.ClaimLease(name, req("h1", time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := c.ReleaseLeaseContext(context.Background(), name, "h1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.ClaimLease("again", req("h2", time.Minute)); err != nil {
		t.Fatal(err)
	}
	s.awaitGone(t, "ns", "witness")
	m := s.lastMessage(t, "ns", "again")
	if m == nil || m.Header.Get("KV-Operation") != "" {
		t.Fatalf("lease claimed again: last message %+v, want its record", m)
	}
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	mustHold(t, c, "again", "h2", epoch.Add(time.Minute))
}
