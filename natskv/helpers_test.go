package natskv_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease/clock/clocktest"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/natskv"
)

// epoch is where test clocks start; any fixed time does.
var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testStore is a real embedded JetStream server with a lease bucket.
type testStore struct {
	js     jetstream.JetStream
	bucket *natskv.Bucket
}

// newStore starts a JetStream server for the test and opens the default
// bucket on it. Everything is stopped when the test ends.
func newStore(t testing.TB) *testStore {
	t.Helper()
	return newStoreSync(t, false)
}

// newStoreSync is newStore with the server's SyncAlways set to sync: every
// write fsynced before it is acknowledged, as in production.
func newStoreSync(t testing.TB, sync bool) *testStore {
	t.Helper()
	return newStoreWith(t, sync, natskv.BucketConfig{})
}

// newStoreWith is newStoreSync with the default bucket opened with cfg (its
// JetStream filled in).
func newStoreWith(t testing.TB, sync bool, cfg natskv.BucketConfig) *testStore {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: t.TempDir(), NoSync: !sync})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	cfg.JetStream = js
	b, err := natskv.OpenBucket(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open bucket: %v", err)
	}
	return &testStore{js: js, bucket: b}
}

// newClusterStore starts three clustered JetStream servers (SyncAlways off)
// and opens the default bucket with three replicas through the first.
func newClusterStore(t testing.TB) *testStore {
	t.Helper()
	var routes []string
	var ports []int
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		routes = append(routes, "nats-route://"+l.Addr().String())
		_ = l.Close()
	}
	servers := make([]*embedded.Server, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() {
			servers[i], errs[i] = embedded.Start(embedded.Config{
				Name: fmt.Sprintf("n%d", i), Port: -1, DataDir: t.TempDir(), NoSync: true,
				Cluster: embedded.Cluster{Name: "c", Host: "127.0.0.1", Port: ports[i], Routes: routes},
			})
		})
	}
	wg.Wait()
	for i, srv := range servers {
		if errs[i] != nil {
			t.Fatalf("start server %d: %v", i, errs[i])
		}
		t.Cleanup(srv.Shutdown)
	}
	nc, err := servers[0].Connect()
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	// The cluster elects its JetStream leader on its own time, with no
	// event to wait on: try until the bucket opens.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		b, err := natskv.OpenBucket(ctx, natskv.BucketConfig{JetStream: js, Replicas: 3})
		cancel()
		if err == nil {
			return &testStore{js: js, bucket: b}
		}
		if time.Now().After(deadline) {
			t.Fatalf("open a bucket with 3 replicas: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// client returns a Client of namespace on the store, on clock, refreshed.
func (s *testStore) client(t testing.TB, namespace string, clock natskv.Clock) *natskv.Client {
	t.Helper()
	c, err := natskv.NewClient(natskv.Config{Bucket: s.bucket, Namespace: namespace, Clock: clock})
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	if err := c.Refresh(); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	return c
}

// put writes raw bytes under a key of the bucket, bypassing every check.
func (s *testStore) put(t testing.TB, key string, value []byte) uint64 {
	t.Helper()
	kv, err := s.js.KeyValue(context.Background(), natskv.DefaultBucket)
	if err != nil {
		t.Fatalf("bind bucket: %v", err)
	}
	rev, err := kv.Put(context.Background(), key, value)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return rev
}

// lastRevision returns the bucket stream's last sequence: it moves with
// every write, so tests use it to prove that nothing was written.
func (s *testStore) lastRevision(t testing.TB) uint64 {
	t.Helper()
	st, err := s.js.Stream(context.Background(), "KV_"+natskv.DefaultBucket)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.LastSeq
}

func newClock() *clocktest.Fake { return clocktest.NewFake(epoch) }
