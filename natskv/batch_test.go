package natskv_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/natskv"
)

// latestRevision reads a key's latest revision (0 if never written) from the
// stream, outside any Client.
func (s *testStore) latestRevision(t testing.TB, key string) uint64 {
	t.Helper()
	st, err := s.js.Stream(context.Background(), "KV_"+natskv.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(context.Background(), "$KV."+natskv.DefaultBucket+"."+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return msg.Sequence
}

// mustPrepare returns a function that fails the test if a Prepare failed.
func mustPrepare(t *testing.T) func(*natskv.Write, error) *natskv.Write {
	return func(w *natskv.Write, err error) *natskv.Write {
		t.Helper()
		if err != nil {
			t.Fatalf("prepare: %v", err)
		}
		return w
	}
}

func hour(holder string) lease.Request { return lease.Request{Holder: holder, Duration: time.Hour} }

// TestRunBatchMixed commits creates, creates over a delete marker, updates
// and deletes in one batch, with and without SyncAlways (the server
// acknowledges a batch differently when it syncs), and every Write gets the
// revision it created.
func TestRunBatchMixed(t *testing.T) {
	stores := []struct {
		name string
		new  func(testing.TB) *testStore
	}{
		{"sync=true", func(t testing.TB) *testStore { return newStoreSync(t, true) }},
		{"sync=false", func(t testing.TB) *testStore { return newStoreSync(t, false) }},
		// A replicated bucket stages batches differently: the revisions
		// inferred from the commit's ack must still be the stream's.
		{"replicas=3", newClusterStore},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			s := st.new(t)
			must := mustPrepare(t)
			if !s.bucket.AtomicBatches() {
				t.Fatal("OpenBucket left atomic batches off")
			}
			clock := newClock()
			c := s.client(t, "ns", clock)
			for _, name := range []string{"extend", "renew", "release", "expire", "reclaim"} {
				if err := c.ClaimLease(name, lease.Request{Holder: "h", Duration: time.Minute}); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.ReleaseLeaseContext(context.Background(), "reclaim", "h"); err != nil {
				t.Fatal(err)
			}
			clock.Advance(30 * time.Second)
			extend := must(c.PrepareExtend("extend", hour("h")))
			renew := must(c.PrepareRenew("renew", lease.Request{Holder: "h", Duration: time.Minute}))
			release := must(c.PrepareRelease("release", "h"))
			reclaim := must(c.PrepareClaim("reclaim", hour("other")))
			clock.Advance(31 * time.Second) // "expire" is now past its expiry
			expire := must(c.PrepareExpire("expire"))
			writes := []*natskv.Write{extend, renew, release, reclaim, expire}
			for i := range 20 {
				writes = append(writes, must(c.PrepareClaim(fmt.Sprintf("new%d", i), hour("n"))))
			}
			before := s.lastRevision(t)

			stats := s.bucket.RunBatch(context.Background(), writes)

			if want := (natskv.BatchStats{Batches: 1, Largest: len(writes)}); stats != want {
				t.Errorf("stats = %+v, want %+v", stats, want)
			}
			for i, w := range writes {
				if err := c.Apply(w); err != nil {
					t.Fatalf("%s: %v", w.Lease(), err)
				}
				key := "ns." + w.Lease()
				if got := s.latestRevision(t, key); w.Revision() != got || got != before+uint64(i)+1 {
					t.Errorf("%s: Revision() = %d, store has %d, want %d", w.Lease(), w.Revision(), got, before+uint64(i)+1)
				}
			}
			// A fresh reader sees what the batch wrote.
			r := s.client(t, "ns", newClock())
			for name, want := range map[string]string{"extend": "h", "renew": "h", "reclaim": "other", "new0": "n", "new19": "n"} {
				if info, ok := r.Lease(name); !ok || info.Holder != want {
					t.Errorf("%s: held %v by %q, want %q", name, ok, info.Holder, want)
				}
			}
			for _, name := range []string{"release", "expire"} {
				if _, ok := r.Lease(name); ok {
					t.Errorf("%s still held after its delete", name)
				}
			}
			if f, _ := c.Fence("reclaim"); f != reclaim.Revision() {
				t.Errorf("fence of the new tenure = %d, want %d", f, reclaim.Revision())
			}
		})
	}
}

// TestRunBatchStaleWrite: another writer moves one key of a batch first.
// The server refuses the whole batch without saying which key; only that
// write fails, with ErrInvalid and the key's latest state in the cache, and
// the others are committed by a second batch.
func TestRunBatchStaleWrite(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(c *natskv.Client) (*natskv.Write, error)
		// race is the other writer's write to "stale", made after the
		// batch was prepared.
		race       func(other *natskv.Client) error
		wantHolder string // holder of "stale" afterwards, "" for none
	}{{
		name:       "claim",
		prepare:    func(c *natskv.Client) (*natskv.Write, error) { return c.PrepareClaim("stale", hour("me")) },
		race:       func(o *natskv.Client) error { return o.ClaimLease("stale", hour("them")) },
		wantHolder: "them",
	}, {
		name:       "extend",
		prepare:    func(c *natskv.Client) (*natskv.Write, error) { return c.PrepareRenew("stale", hour("me")) },
		race:       func(o *natskv.Client) error { return o.ReleaseLeaseContext(context.Background(), "stale", "me") },
		wantHolder: "",
	}, {
		name: "release",
		prepare: func(c *natskv.Client) (*natskv.Write, error) {
			return c.PrepareRelease("stale", "me")
		},
		race: func(o *natskv.Client) error {
			return o.ExtendLease("stale", lease.Request{Holder: "me", Duration: 2 * time.Hour})
		},
		wantHolder: "me",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStoreSync(t, true)
			must := mustPrepare(t)
			c := s.client(t, "ns", newClock())
			if tt.name != "claim" {
				if err := c.ClaimLease("stale", hour("me")); err != nil {
					t.Fatal(err)
				}
			}
			var writes []*natskv.Write
			for i := range 5 {
				writes = append(writes, must(c.PrepareClaim(fmt.Sprintf("a%d", i), hour("me"))))
			}
			stale := must(tt.prepare(c))
			writes = append(writes, stale)
			for i := range 5 {
				writes = append(writes, must(c.PrepareClaim(fmt.Sprintf("b%d", i), hour("me"))))
			}
			other := s.client(t, "ns", newClock())
			if err := tt.race(other); err != nil {
				t.Fatalf("other writer: %v", err)
			}

			stats := s.bucket.RunBatch(context.Background(), writes)

			if want := (natskv.BatchStats{Batches: 2, Refused: 1, Largest: 11}); stats != want {
				t.Errorf("stats = %+v, want %+v", stats, want)
			}
			for _, w := range writes {
				err := c.Apply(w)
				if w == stale {
					if !errors.Is(err, lease.ErrInvalid) {
						t.Errorf("stale write: %v, want ErrInvalid", err)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", w.Lease(), err)
				} else if got := s.latestRevision(t, "ns."+w.Lease()); got != w.Revision() {
					t.Errorf("%s: Revision() = %d, store has %d", w.Lease(), w.Revision(), got)
				}
			}
			// The cache has the other writer's state of the key.
			holder, _, ok := c.Holder("stale")
			if tt.wantHolder == "" && ok || tt.wantHolder != "" && holder != tt.wantHolder {
				t.Errorf("cache after the lost race: held %v by %q, want %q", ok, holder, tt.wantHolder)
			}
		})
	}
}

// TestRunBatchDuplicateKeys: two writes for one key never share a batch;
// the second goes after the first, as if run in order, and loses to it.
func TestRunBatchDuplicateKeys(t *testing.T) {
	s := newStore(t)
	must := mustPrepare(t)
	c := s.client(t, "ns", newClock())
	first := must(c.PrepareClaim("k", hour("a")))
	x := must(c.PrepareClaim("x", hour("a")))
	second := must(c.PrepareClaim("k", hour("b")))
	y := must(c.PrepareClaim("y", hour("a")))

	stats := s.bucket.RunBatch(context.Background(), []*natskv.Write{first, x, second, y})

	// A duplicate key in one batch would have been refused (Refused 1).
	if want := (natskv.BatchStats{Batches: 1, Singles: 1, Largest: 3}); stats != want {
		t.Errorf("stats = %+v, want %+v", stats, want)
	}
	for _, w := range []*natskv.Write{first, x, y} {
		if err := c.Apply(w); err != nil {
			t.Errorf("%s: %v", w.Lease(), err)
		}
	}
	if err := c.Apply(second); !errors.Is(err, lease.ErrInvalid) {
		t.Errorf("second write of k: %v, want ErrInvalid", err)
	}
	if holder, _, _ := c.Holder("k"); holder != "a" {
		t.Errorf("k held by %q, want a", holder)
	}
}

// TestRunBatchSplitsAtMax: more than MaxBatch writes go in several batches.
func TestRunBatchSplitsAtMax(t *testing.T) {
	s := newStore(t)
	must := mustPrepare(t)
	c := s.client(t, "ns", newClock())
	n := 2*natskv.MaxBatch + 500
	writes := make([]*natskv.Write, n)
	for i := range writes {
		writes[i] = must(c.PrepareClaim(fmt.Sprintf("l%d", i), hour("h")))
	}
	before := s.lastRevision(t)

	stats := s.bucket.RunBatch(context.Background(), writes)

	if want := (natskv.BatchStats{Batches: 3, Largest: natskv.MaxBatch}); stats != want {
		t.Errorf("stats = %+v, want %+v", stats, want)
	}
	for _, w := range writes {
		if err := c.Apply(w); err != nil {
			t.Fatalf("%s: %v", w.Lease(), err)
		}
	}
	if got := s.lastRevision(t); got != before+uint64(n) {
		t.Errorf("bucket at revision %d, want %d", got, before+uint64(n))
	}
}

// TestRunBatchWithoutAtomicPublish: a bucket whose stream does not allow
// atomic batches (bound, not opened) gets the same results one write at a
// time.
func TestRunBatchWithoutAtomicPublish(t *testing.T) {
	s := newStore(t)
	must := mustPrepare(t)
	ctx := context.Background()
	if _, err := s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "plain"}); err != nil {
		t.Fatal(err)
	}
	b, err := natskv.BindBucket(ctx, natskv.BucketConfig{JetStream: s.js, Name: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	if b.AtomicBatches() {
		t.Fatal("AtomicBatches() on a stream that does not allow them")
	}
	c, err := natskv.NewClient(natskv.Config{Bucket: b, Namespace: "ns", Clock: newClock()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ClaimLease("taken", hour("them")); err != nil {
		t.Fatal(err)
	}
	other, err := natskv.NewClient(natskv.Config{Bucket: b, Namespace: "ns", Clock: newClock()})
	if err != nil {
		t.Fatal(err)
	}
	ok := must(other.PrepareClaim("free", hour("me")))
	lost := must(other.PrepareClaim("taken", hour("me"))) // its cache is empty

	stats := b.RunBatch(ctx, []*natskv.Write{ok, lost})

	if want := (natskv.BatchStats{Singles: 2}); stats != want {
		t.Errorf("stats = %+v, want %+v", stats, want)
	}
	if err := other.Apply(ok); err != nil {
		t.Errorf("free: %v", err)
	}
	if err := other.Apply(lost); !errors.Is(err, lease.ErrInvalid) {
		t.Errorf("taken: %v, want ErrInvalid", err)
	}
}

// A local extension given to RunBatch is not sent: only the other writes
// are, and Apply moves the local one's expiry.
func TestRunBatchSendsNoLocalExtension(t *testing.T) {
	s, clock, c := claimedForAMinute(t)
	must := mustPrepare(t)
	clock.Advance(30 * time.Second)
	local := must(c.PrepareLocalExtend("l", lease.Request{Holder: "h", Duration: time.Minute}))
	if !local.Local() {
		t.Fatal("an extension the record covers is not local")
	}
	claim := must(c.PrepareClaim("new", hour("n")))
	before := s.lastRevision(t)

	s.bucket.RunBatch(context.Background(), []*natskv.Write{local, claim})

	for _, w := range []*natskv.Write{local, claim} {
		if err := c.Apply(w); err != nil {
			t.Fatalf("%s: %v", w.Lease(), err)
		}
	}
	if after := s.lastRevision(t); after != before+1 {
		t.Fatalf("revision %d -> %d, want one write", before, after)
	}
	mustHold(t, c, "l", "h", epoch.Add(90*time.Second))
}
