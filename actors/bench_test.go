package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/natskv"
)

// Benchmarks run on a real embedded JetStream server with fsync off: with
// fsync on, every write costs one fsync and both the Manager and the raw
// store measure the disk.
const benchGoroutines = 32

type benchEnv struct {
	srv    *embedded.Server
	m      *Manager
	nc     *nats.Conn
	js     jetstream.JetStream
	bucket *natskv.Bucket
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	return newBenchEnvSync(b, false)
}

// newBenchEnvSync is newBenchEnv with the server's SyncAlways set to sync,
// as the product runs it: every write fsynced before it is acknowledged.
func newBenchEnvSync(b *testing.B, sync bool) *benchEnv {
	b.Helper()
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: b.TempDir(), NoSync: !sync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	m := newBenchManager(b, srv, nc, 0)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	bucket, err := natskv.OpenBucket(context.Background(), natskv.BucketConfig{JetStream: js})
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{srv: srv, m: m, nc: nc, js: js, bucket: bucket}
}

// newBenchManager starts a Manager with logging off and the MinBatch given
// (0, the default: group commit off), publishing only the events someone
// would receive, as leaseagent does with its embedded server.
func newBenchManager(b *testing.B, srv *embedded.Server, nc *nats.Conn, minBatch int) *Manager {
	b.Helper()
	m, err := New(context.Background(), Config{
		Conn: nc, Logger: slog.New(slog.DiscardHandler), MinBatch: minBatch, Interest: srv.Interest,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Stop(context.Background()) })
	return m
}

// rounds is how many alternating turns compared runs take, so that drift in
// the machine or the server's state over a run falls on both alike.
const rounds = 10

// compare runs n calls of each of fs, alternating between them in rounds,
// and returns each one's rate. Call i of every f gets the same i.
func compare(b *testing.B, n int, fs ...func(g, i int) error) []float64 {
	b.Helper()
	return compareOn(b, benchGoroutines, n, fs...)
}

// compareOn is compare with the calls spread over goroutines goroutines.
func compareOn(b *testing.B, goroutines, n int, fs ...func(g, i int) error) []float64 {
	b.Helper()
	sides := make([]side, len(fs))
	for k, f := range fs {
		sides[k] = side{call: f}
	}
	return compareSides(b, goroutines, n, sides...)
}

// side is one of the compared ways of making the calls. If its calls
// return before they take effect (asynchronous publishes), settle waits
// until they have: each round of the side is timed until settle returns,
// so that its rate counts only work done, and none of its work spills into
// the next side's round.
type side struct {
	call   func(g, i int) error
	settle func() error
}

// compareSides is compareOn for sides.
func compareSides(b *testing.B, goroutines, n int, sides ...side) []float64 {
	b.Helper()
	elapsed := make([]time.Duration, len(sides))
	for r := range rounds {
		from, to := n*r/rounds, n*(r+1)/rounds
		for k, s := range sides {
			start := time.Now()
			parallel(b, goroutines, from, to, s.call)
			if s.settle != nil {
				if err := s.settle(); err != nil {
					b.Fatal(err)
				}
			}
			elapsed[k] += time.Since(start)
		}
	}
	rates := make([]float64, len(sides))
	for k := range sides {
		rates[k] = float64(n) / elapsed[k].Seconds()
	}
	return rates
}

// parallel makes the calls f(g, i) for i in [from, to), spread over
// goroutines goroutines (g is the goroutine's number).
func parallel(b *testing.B, goroutines, from, to int, f func(g, i int) error) {
	b.Helper()
	var next atomic.Int64
	next.Store(int64(from))
	n := to
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(g, i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// rawClients returns one natskv Client per goroutine, each in its own
// namespace: the store with nothing in front of it.
func (e *benchEnv) rawClients(b *testing.B, tag string) []*natskv.Client {
	clients := make([]*natskv.Client, benchGoroutines)
	for g := range clients {
		c, err := natskv.NewClient(natskv.Config{Bucket: e.bucket, Namespace: fmt.Sprintf("raw-%s-%d", tag, g)})
		if err != nil {
			b.Fatal(err)
		}
		clients[g] = c
	}
	return clients
}

// BenchmarkClaim claims distinct leases from 32 goroutines, through the
// Manager and, in the same run, straight through natskv Clients, and
// reports both rates and their ratio (target: manager/raw >= 0.8). Beside
// them, two ceilings of bare create-if-absent writes: pipelined with 4096
// in flight, and with 32 in flight (window32), the most that 32 callers
// who each wait for their claim can keep in flight.
func BenchmarkClaim(b *testing.B) {
	e := newBenchEnv(b)
	n := e.m.Namespace("bench")
	raw := e.rawClients(b, "claim")
	req := lease.Request{Holder: "h", Duration: time.Hour}
	pipe, window := e.pipeline(b), e.window(b, benchGoroutines)
	b.ResetTimer()
	rates := compareSides(b, benchGoroutines, b.N,
		side{call: func(_, i int) error { return n.Claim(fmt.Sprintf("l%d", i), "h", time.Hour) }},
		side{call: func(g, i int) error { return raw[g].ClaimLease(fmt.Sprintf("l%d", i), req) }},
		side{call: func(_, i int) error { return pipe.create(fmt.Sprintf("p%d", i)) }, settle: pipe.settle},
		side{call: func(_, i int) error { return window.create(fmt.Sprintf("w%d", i)) }, settle: window.settle},
	)
	report(b, rates[0], rates[1])
	b.ReportMetric(rates[2], "pipelined-ops/s")
	b.ReportMetric(rates[0]/rates[2], "manager/pipelined")
	b.ReportMetric(rates[3], "window32-ops/s")
	b.ReportMetric(rates[3]/rates[2], "window32/pipelined")
	b.ReportMetric(rates[0]/rates[3], "manager/window32")
}

// BenchmarkExtend extends held leases from 32 goroutines (one lease each,
// extended again and again), Manager against raw natskv.
func BenchmarkExtend(b *testing.B) {
	e := newBenchEnv(b)
	n := e.m.Namespace("bench")
	raw := e.rawClients(b, "extend")
	for g := range benchGoroutines {
		if err := raw[g].ClaimLease("l", lease.Request{Holder: "h", Duration: time.Minute}); err != nil {
			b.Fatal(err)
		}
		if err := n.Claim(fmt.Sprintf("l%d", g), "h", time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	// Durations grow with i so that every extension moves the expiry and
	// is longer than the stored record, so the manager writes each one as
	// the raw client does, however fast the clock runs. (A renewal for the
	// record's duration is kept in memory and costs about a check.)
	rates := compare(b, b.N,
		func(g, i int) error {
			return n.Claim(fmt.Sprintf("l%d", g), "h", time.Minute+time.Duration(i)*time.Millisecond)
		},
		func(g, i int) error {
			return raw[g].ExtendLease("l", lease.Request{Holder: "h", Duration: time.Minute + time.Duration(i)*time.Millisecond})
		},
	)
	report(b, rates[0], rates[1])
}

// BenchmarkCheck checks held leases from 32 goroutines: no I/O, so its
// baseline is a map read under a mutex, the least any check can cost.
func BenchmarkCheck(b *testing.B) {
	e := newBenchEnv(b)
	n := e.m.Namespace("bench")
	tokens := make([]lease.Token, benchGoroutines)
	for g := range tokens {
		name := fmt.Sprintf("l%d", g)
		if err := n.Claim(name, "h", time.Hour); err != nil {
			b.Fatal(err)
		}
		tokens[g] = n.Token(name, "h")
	}
	b.ResetTimer()
	rates := compare(b, b.N, func(g, _ int) error { return tokens[g].Check(nil) })
	b.ReportMetric(rates[0], "checks/s")
	b.ReportMetric(0, "ns/op")
}

// pipeline is the raw ceiling: create-if-absent KV writes published
// asynchronously, acknowledgements collected as they come, no goroutine
// waiting on any one write, at most a window of them in flight.
type pipeline struct {
	js     jetstream.JetStream
	prefix string
}

// pipeline returns the ceiling with 4096 writes in flight (newBenchEnv's
// JetStream context).
func (e *benchEnv) pipeline(b *testing.B) *pipeline {
	return &pipeline{js: e.js, prefix: "pipe."}
}

// window returns a pipeline that keeps at most n writes in flight: with n
// the number of callers, the most that callers who each wait for their
// own write can keep in flight, done at the least cost.
func (e *benchEnv) window(b *testing.B, n int) *pipeline {
	js, err := jetstream.New(e.nc, jetstream.WithPublishAsyncMaxPending(n))
	if err != nil {
		b.Fatal(err)
	}
	return &pipeline{js: js, prefix: fmt.Sprintf("window%d.", n)}
}

func (p *pipeline) create(key string) error {
	_, err := p.js.PublishMsgAsync(&nats.Msg{Subject: "$KV." + natskv.DefaultBucket + "." + p.prefix + key, Data: []byte("x")},
		jetstream.WithExpectLastSequencePerSubject(0), jetstream.WithStallWait(time.Minute))
	return err
}

// settle waits until every write published so far is acknowledged.
func (p *pipeline) settle() error {
	select {
	case <-p.js.PublishAsyncComplete():
		return nil
	case <-time.After(time.Minute):
		return errors.New("async publishes not acknowledged within a minute")
	}
}

func report(b *testing.B, managerRate, rawRate float64) {
	b.ReportMetric(managerRate, "manager-ops/s")
	b.ReportMetric(rawRate, "raw-ops/s")
	b.ReportMetric(managerRate/rawRate, "manager/raw")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDurableClaim claims distinct leases from 32 goroutines on a
// server with SyncAlways (the product's default), where every single write
// costs an fsync: raw single writes (32 natskv Clients), raw atomic batches
// of 128 (natskv.Bucket.RunBatch, 32 goroutines), and the Manager with
// group commit (MinBatch DefaultMinBatch) and without (as before it).
func BenchmarkDurableClaim(b *testing.B) {
	const batch = 128
	e := newBenchEnvSync(b, true)
	gc := newBenchManager(b, e.srv, e.nc, DefaultMinBatch).Namespace("bench")
	nogc := e.m.Namespace("bench-nogc")
	raw := e.rawClients(b, "claim")
	batcher := e.rawClients(b, "batch")
	req := lease.Request{Holder: "h", Duration: time.Hour}
	b.ResetTimer()
	rates := compare(b, b.N,
		func(g, i int) error { return raw[g].ClaimLease(fmt.Sprintf("l%d", i), req) },
		func(g, i int) error {
			if i%batch != 0 {
				return nil
			}
			c := batcher[g]
			ws := make([]*natskv.Write, 0, batch)
			for j := i; j < min(i+batch, b.N); j++ {
				w, err := c.PrepareClaim(fmt.Sprintf("l%d", j), req)
				if err != nil {
					return err
				}
				ws = append(ws, w)
			}
			e.bucket.RunBatch(context.Background(), ws)
			for _, w := range ws {
				if err := c.Apply(w); err != nil {
					return err
				}
			}
			return nil
		},
		func(_, i int) error { return gc.Claim(fmt.Sprintf("l%d", i), "h", time.Hour) },
		func(_, i int) error { return nogc.Claim(fmt.Sprintf("l%d", i), "h", time.Hour) },
	)
	b.ReportMetric(rates[0], "raw-single-ops/s")
	b.ReportMetric(rates[1], "raw-batch128-ops/s")
	b.ReportMetric(rates[2], "manager-ops/s")
	b.ReportMetric(rates[3], "manager-nogc-ops/s")
	b.ReportMetric(rates[2]/rates[3], "gc/nogc")
	b.ReportMetric(rates[2]/rates[0], "manager/raw-single")
	b.ReportMetric(rates[2]/rates[1], "manager/raw-batch")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkClaimAlone claims distinct leases from one goroutine, one claim
// after the other, with and without SyncAlways: a lone client must not wait
// for a batch to fill, so the Manager with group commit should claim as
// fast as without it (gc/nogc about 1).
func BenchmarkClaimAlone(b *testing.B) {
	for _, sync := range []bool{true, false} {
		b.Run(fmt.Sprintf("sync=%v", sync), func(b *testing.B) {
			e := newBenchEnvSync(b, sync)
			gc := newBenchManager(b, e.srv, e.nc, DefaultMinBatch).Namespace("bench")
			nogc := e.m.Namespace("bench-nogc")

			raw := e.rawClients(b, "alone")[0]
			req := lease.Request{Holder: "h", Duration: time.Hour}
			b.ResetTimer()
			rates := compareOn(b, 1, b.N,
				func(_, i int) error { return gc.Claim(fmt.Sprintf("l%d", i), "h", time.Hour) },
				func(_, i int) error { return nogc.Claim(fmt.Sprintf("l%d", i), "h", time.Hour) },
				func(_, i int) error { return raw.ClaimLease(fmt.Sprintf("l%d", i), req) },
			)
			b.ReportMetric(1e6/rates[0], "manager-us/claim")
			b.ReportMetric(1e6/rates[1], "manager-nogc-us/claim")
			b.ReportMetric(1e6/rates[2], "raw-us/claim")
			b.ReportMetric(rates[0]/rates[1], "gc/nogc")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkListPage lists a namespace of 100k leases: a page of 100 from
// a point spread over the namespace through the name index (LeasesPage),
// against a copy of the whole namespace (Leases, what a list asked for
// before pages). A page costs as much as the page, a copy as the
// namespace.
func BenchmarkListPage(b *testing.B) {
	const size, page = 100000, 100
	e := newBenchEnv(b)
	n := e.m.Namespace("bench")
	parallel(b, benchGoroutines, 0, size, func(_, i int) error { return n.Claim(fmt.Sprintf("l%06d", i), "h", time.Hour) })
	ctx := context.Background()
	b.Run("page", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			leases, _, err := n.LeasesPage(ctx, fmt.Sprintf("l%06d", i*7919%size), page)
			if err != nil || len(leases) == 0 {
				b.Fatalf("page of %d leases, err %v", len(leases), err)
			}
		}
	})
	b.Run("whole", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if leases, err := n.Leases(ctx); err != nil || len(leases) != size {
				b.Fatalf("%d leases, err %v", len(leases), err)
			}
		}
	})
}
