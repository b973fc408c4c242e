package natskv_test

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/natskv"
)

func TestBindBucketNeitherCreatesNorChanges(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()

	// A missing bucket is an error, and stays missing.
	_, err := natskv.BindBucket(ctx, natskv.BucketConfig{JetStream: s.js, Name: "missing"})
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("BindBucket of a missing bucket: %v, want ErrBucketNotFound", err)
	}
	if _, err := s.js.KeyValue(ctx, "missing"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("after BindBucket, bucket missing: %v, want ErrBucketNotFound", err)
	}

	// A bucket that allows direct gets (as nats.go creates them) keeps
	// allowing them.
	if _, err := s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "direct"}); err != nil {
		t.Fatal(err)
	}
	b, err := natskv.BindBucket(ctx, natskv.BucketConfig{JetStream: s.js, Name: "direct", Replicas: 3})
	if err != nil {
		t.Fatalf("BindBucket: %v", err)
	}
	info, err := b.StreamInfo(ctx)
	if err != nil {
		t.Fatalf("StreamInfo: %v", err)
	}
	if info.Config.Name != "KV_direct" || !info.Config.AllowDirect || info.Config.Replicas != 1 {
		t.Errorf("stream %s: allow direct %v, replicas %d; want KV_direct unchanged (true, 1)",
			info.Config.Name, info.Config.AllowDirect, info.Config.Replicas)
	}
	if b.Name() != "direct" {
		t.Errorf("Name() = %q, want direct", b.Name())
	}
}

func TestCountHeld(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	clock := newClock()
	counts := func() map[string]int {
		t.Helper()
		// Through a bound Bucket, as a reader would.
		b, err := natskv.BindBucket(ctx, natskv.BucketConfig{JetStream: s.js})
		if err != nil {
			t.Fatalf("BindBucket: %v", err)
		}
		got, err := b.CountHeld(ctx)
		if err != nil {
			t.Fatalf("CountHeld: %v", err)
		}
		return got
	}
	if got := counts(); len(got) != 0 {
		t.Fatalf("CountHeld of an empty bucket = %v, want none", got)
	}

	a := s.client(t, "app", clock)
	odd := s.client(t, "odd/ns:1", clock)
	for _, name := range []string{"x", "y", "z"} {
		if err := a.ClaimLease(name, lease.Request{Holder: "h", Duration: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	if err := odd.ClaimLease("mysql/0", lease.Request{Holder: "h", Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseLeaseContext(ctx, "y", "h"); err != nil {
		t.Fatal(err)
	}
	// Released namespaces keep only delete markers, and keys that are not
	// lease keys are skipped.
	gone := s.client(t, "gone", clock)
	if err := gone.ClaimLease("l", lease.Request{Holder: "h", Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := gone.ReleaseLeaseContext(ctx, "l", "h"); err != nil {
		t.Fatal(err)
	}
	s.put(t, "nodot", []byte("x"))
	s.put(t, "a.b.c", []byte("x"))
	s.put(t, "bad=ZZ.l", []byte("x"))

	want := map[string]int{"app": 2, "odd/ns:1": 1}
	if got := counts(); !maps.Equal(got, want) {
		t.Errorf("CountHeld = %v, want %v", got, want)
	}
}

// Agents that start together open the bucket together: each ends with a
// Bucket that batches and expires markers, on a stream that answers reads
// from its leader only.
func TestBucketsOpenedTogetherAllConfigureTheStream(t *testing.T) {
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	const agents = 8
	buckets := make([]*natskv.Bucket, agents)
	errs := make([]error, agents)
	var wg sync.WaitGroup
	for i := range agents {
		nc, err := srv.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			buckets[i], errs[i] = natskv.OpenBucket(context.Background(), natskv.BucketConfig{JetStream: js})
		})
	}
	wg.Wait()
	for i, b := range buckets {
		if errs[i] != nil {
			t.Fatalf("agent %d: %v", i, errs[i])
		}
		if !b.AtomicBatches() {
			t.Errorf("agent %d's bucket does not batch", i)
		}
		info, err := b.StreamInfo(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if c := info.Config; c.AllowDirect || !c.AllowAtomicPublish || !c.AllowMsgTTL {
			t.Fatalf("stream allows direct get %v, atomic publish %v, message TTLs %v; want false, true, true", c.AllowDirect, c.AllowAtomicPublish, c.AllowMsgTTL)
		}
	}
}
