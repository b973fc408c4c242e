package natskv_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease/natskv"
)

// listed returns the names LeasesAfter(after) yields, at most limit of
// them (all if limit is 0).
func listed(c *natskv.Client, after string, limit int) []string {
	var names []string
	for l := range c.LeasesAfter(after) {
		if limit > 0 && len(names) == limit {
			break
		}
		names = append(names, l.Lease)
	}
	return names
}

// mustList fails the test unless LeasesAfter lists exactly want, in that
// order, each lease as Leases and Fence have it, and Count agrees.
func mustList(t *testing.T, c *natskv.Client, want ...string) {
	t.Helper()
	leases := c.Leases()
	var got []string
	for l := range c.LeasesAfter("") {
		got = append(got, l.Lease)
		info, held := leases[l.Lease]
		fence, _ := c.Fence(l.Lease)
		if !held || info.Holder != l.Holder || !info.Expiry.Equal(l.Expiry) || fence != l.Fence {
			t.Fatalf("LeasesAfter yields %+v; the cache has holder %q, expiry %v, fence %d (held %v)", l, info.Holder, info.Expiry, fence, held)
		}
	}
	if !slices.Equal(got, want) || c.Count() != len(want) || len(leases) != len(want) {
		t.Fatalf("LeasesAfter lists %q, Count says %d, Leases has %d; want %q", got, c.Count(), len(leases), want)
	}
}

// claimAll claims each of names for "h" for d.
func claimAll(t *testing.T, c *natskv.Client, d time.Duration, names ...string) {
	t.Helper()
	for _, name := range names {
		if err := c.ClaimLease(name, req("h", d)); err != nil {
			t.Fatalf("claim %q: %v", name, err)
		}
	}
}

func TestLeasesAfterListsClaimsInNameOrder(t *testing.T) {
	s := newStore(t)
	c := s.client(t, "ns", newClock())
	mustList(t, c)
	claimAll(t, c, time.Minute, "b", "c", "a")
	mustList(t, c, "a", "b", "c")
}

// An extension, written or kept in the cache, leaves the lease listed once,
// with its new expiry.
func TestLeasesAfterListsAnExtendedLeaseOnce(t *testing.T) {
	for _, tt := range []struct {
		name   string
		extend func(c *natskv.Client) error
	}{
		{"written", func(c *natskv.Client) error { return c.ExtendLease("l", req("h", 2*time.Minute)) }},
		{"no-op", func(c *natskv.Client) error { return c.ExtendLease("l", req("h", time.Second)) }},
		{"local", func(c *natskv.Client) error {
			w, err := c.PrepareLocalExtend("l", req("h", time.Minute))
			if err != nil {
				return err
			}
			w.Run(context.Background())
			return c.Apply(w)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, clock, c := claimedForAMinute(t)
			mustList(t, c, "l")
			clock.Advance(30 * time.Second)
			if err := tt.extend(c); err != nil {
				t.Fatal(err)
			}
			mustList(t, c, "l")
		})
	}
}

// A lease past its expiry stays listed until its removal: the cache holds
// it until then (package actors leaves it out of its pages).
func TestLeasesAfterDropsAnExpiredLeaseOnceRemoved(t *testing.T) {
	s := newStore(t)
	clock := newClock()
	c := s.client(t, "ns", clock)
	claimAll(t, c, time.Minute, "a", "c")
	claimAll(t, c, time.Hour, "b")
	clock.Advance(time.Minute + 1)
	mustList(t, c, "a", "b", "c")
	if err := c.ExpireLease("a"); err != nil {
		t.Fatal(err)
	}
	mustList(t, c, "b", "c")
	if err := c.ExpireLease("c"); err != nil {
		t.Fatal(err)
	}
	mustList(t, c, "b")
}

// A released lease leaves the list, and comes back when claimed again over
// its delete marker.
func TestLeasesAfterDropsAReleasedLease(t *testing.T) {
	s := newStore(t)
	c := s.client(t, "ns", newClock())
	claimAll(t, c, time.Minute, "a", "b")
	mustList(t, c, "a", "b")
	if err := c.ReleaseLeaseContext(context.Background(), "a", "h"); err != nil {
		t.Fatal(err)
	}
	mustList(t, c, "b")
	claimAll(t, c, time.Minute, "a")
	mustList(t, c, "a", "b")
}

// A reload, of the whole namespace or of its changes, brings the list in
// step with what other writers did.
func TestLeasesAfterFollowsAReload(t *testing.T) {
	loads := []struct {
		name string
		load func(c *natskv.Client) error
	}{
		{"whole", func(c *natskv.Client) error { return c.RefreshContext(context.Background()) }},
		{"changes", func(c *natskv.Client) error {
			snap, err := c.LoadChanges(context.Background(), c.Seen())
			if err != nil {
				return err
			}
			return c.ApplySnapshot(snap)
		}},
	}
	for _, tt := range []struct {
		name       string
		change     func(t *testing.T, s *testStore, other *natskv.Client)
		wholeLoad  bool // only a load of the whole namespace sees it
		unreadable bool // the reload reports a record it cannot read
		want       []string
	}{
		{"another writer claims", func(t *testing.T, _ *testStore, other *natskv.Client) {
			claimAll(t, other, time.Minute, "c")
		}, false, false, []string{"a", "b", "c"}},
		{"another writer releases", func(t *testing.T, _ *testStore, other *natskv.Client) {
			if err := other.ReleaseLeaseContext(context.Background(), "a", "h"); err != nil {
				t.Fatal(err)
			}
		}, false, false, []string{"b"}},
		{"another writer deletes the key", func(t *testing.T, s *testStore, _ *natskv.Client) {
			if err := bucketKV(t, s).Delete(context.Background(), "ns.a"); err != nil {
				t.Fatal(err)
			}
		}, false, false, []string{"b"}},
		{"another writer purges the key", func(t *testing.T, s *testStore, _ *natskv.Client) {
			if err := bucketKV(t, s).Purge(context.Background(), "ns.a"); err != nil {
				t.Fatal(err)
			}
		}, false, false, []string{"b"}},
		{"another writer overwrites the record with garbage", func(t *testing.T, s *testStore, _ *natskv.Client) {
			s.put(t, "ns.a", []byte{0xff, 0xfe})
		}, false, true, []string{"b"}},
		{"the key's messages are purged from the stream", func(t *testing.T, s *testStore, _ *natskv.Client) {
			stream, err := s.js.Stream(context.Background(), "KV_"+natskv.DefaultBucket)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Purge(context.Background(), jetstream.WithPurgeSubject("$KV."+natskv.DefaultBucket+".ns.a")); err != nil {
				t.Fatal(err)
			}
		}, true, false, []string{"b"}},
	} {
		for _, load := range loads {
			if tt.wholeLoad && load.name != "whole" {
				continue
			}
			t.Run(tt.name+"/"+load.name, func(t *testing.T) {
				s := newStore(t)
				clock := newClock()
				c := s.client(t, "ns", clock)
				claimAll(t, c, time.Minute, "a", "b")
				mustList(t, c, "a", "b")
				tt.change(t, s, s.client(t, "ns", clock))
				if err := load.load(c); (err != nil) != tt.unreadable {
					t.Fatalf("reload: %v", err)
				}
				mustList(t, c, tt.want...)
			})
		}
	}
}

// bucketKV binds the store's bucket as a plain KV, for writes that bypass
// natskv.
func bucketKV(t *testing.T, s *testStore) jetstream.KeyValue {
	t.Helper()
	b, err := s.js.KeyValue(context.Background(), natskv.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A write that loses a race installs the key's latest state, and the list
// follows it: a lease another writer claimed appears, one it removed goes.
func TestLeasesAfterFollowsALostRace(t *testing.T) {
	for _, tt := range []struct {
		name string
		// race returns a Client with the lease as before says, and a
		// write of that Client that loses once the store has moved.
		race   func(t *testing.T, s *testStore) (loser *natskv.Client, lose func() error)
		before []string
		want   []string
	}{
		{"a claim finds the lease claimed", func(t *testing.T, s *testStore) (*natskv.Client, func() error) {
			stale := s.client(t, "ns", newClock())
			return stale, func() error {
				claimAll(t, s.client(t, "ns", newClock()), time.Minute, "l")
				return stale.ClaimLease("l", req("other", time.Minute))
			}
		}, nil, []string{"l"}},
		{"an extension finds the lease released", func(t *testing.T, s *testStore) (*natskv.Client, func() error) {
			writer := s.client(t, "ns", newClock())
			claimAll(t, writer, time.Minute, "l")
			stale := s.client(t, "ns", newClock())
			return stale, func() error {
				if err := writer.ReleaseLeaseContext(context.Background(), "l", "h"); err != nil {
					t.Fatal(err)
				}
				return stale.ExtendLease("l", req("h", 2*time.Minute))
			}
		}, []string{"l"}, nil},
		{"an extension finds the record deleted by another writer", func(t *testing.T, s *testStore) (*natskv.Client, func() error) {
			writer := s.client(t, "ns", newClock())
			claimAll(t, writer, time.Minute, "l")
			return writer, func() error {
				if err := bucketKV(t, s).Delete(context.Background(), "ns.l"); err != nil {
					t.Fatal(err)
				}
				return writer.ExtendLease("l", req("h", 2*time.Minute))
			}
		}, []string{"l"}, nil},
		{"an extension finds the record purged by another writer", func(t *testing.T, s *testStore) (*natskv.Client, func() error) {
			writer := s.client(t, "ns", newClock())
			claimAll(t, writer, time.Minute, "l")
			return writer, func() error {
				if err := bucketKV(t, s).Purge(context.Background(), "ns.l"); err != nil {
					t.Fatal(err)
				}
				return writer.ExtendLease("l", req("h", 2*time.Minute))
			}
		}, []string{"l"}, nil},
		{"an expiry finds the lease extended", func(t *testing.T, s *testStore) (*natskv.Client, func() error) {
			writer := s.client(t, "ns", newClock())
			claimAll(t, writer, time.Minute, "l")
			clock := newClock()
			stale := s.client(t, "ns", clock)
			return stale, func() error {
				clock.Advance(2 * time.Minute)
				if err := writer.ExtendLease("l", req("h", 2*time.Minute)); err != nil {
					t.Fatal(err)
				}
				return stale.ExpireLease("l")
			}
		}, []string{"l"}, []string{"l"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			loser, lose := tt.race(t, newStore(t))
			mustList(t, loser, tt.before...)
			mustBeInvalid(t, lose())
			mustList(t, loser, tt.want...)
		})
	}
}

// LeasesAfter starts after any string, present as a name or not, and
// orders names by their UTF-8 bytes: upper case before lower, and a rune
// beyond the Basic Multilingual Plane after one within it (UTF-16 would
// put it before).
func TestLeasesAfterOrdersByBytesFromAnyStart(t *testing.T) {
	s := newStore(t)
	c := s.client(t, "ns", newClock())
	names := []string{"😀", "z", "a", "Ｚ", "ab", "é", "B"}
	claimAll(t, c, time.Minute, names...)
	for _, tt := range []struct {
		name  string
		after string
		limit int
		want  []string
	}{
		{"from the first", "", 0, []string{"B", "a", "ab", "z", "é", "Ｚ", "😀"}},
		{"after a name present", "a", 0, []string{"ab", "z", "é", "Ｚ", "😀"}},
		{"after a name not present", "b", 0, []string{"z", "é", "Ｚ", "😀"}},
		{"after a name before every lease", "A", 0, []string{"B", "a", "ab", "z", "é", "Ｚ", "😀"}},
		{"after a non-ASCII name", "é", 0, []string{"Ｚ", "😀"}},
		{"after the last", "😀", 0, nil},
		{"after every name", "\U0010FFFF", 0, nil},
		{"stopped after one", "", 1, []string{"B"}},
		{"stopped after two from a name present", "ab", 2, []string{"z", "é"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := listed(c, tt.after, tt.limit); !slices.Equal(got, tt.want) {
				t.Fatalf("LeasesAfter(%q) lists %q, want %q", tt.after, got, tt.want)
			}
		})
	}
}

// Listing allocates nothing per lease: a page of a large namespace costs
// the same few allocations as a page of a small one.
func TestLeasesAfterAllocatesNothingPerLease(t *testing.T) {
	s := newStore(t)
	c := s.client(t, "ns", newClock())
	for i := range 300 {
		claimAll(t, c, time.Minute, "l"+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	allocs := testing.AllocsPerRun(20, func() {
		for l := range c.LeasesAfter("") {
			_ = l
		}
	})
	if allocs > 4 {
		t.Fatalf("listing 300 leases made %v allocations, want a few per listing", allocs)
	}
}
