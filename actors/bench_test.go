package actors

import (
	"context"
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
	m      *Manager
	js     jetstream.JetStream
	bucket *natskv.Bucket
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: b.TempDir(), NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	m, err := New(context.Background(), Config{Conn: nc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Stop(context.Background()) })
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	bucket, err := natskv.OpenBucket(context.Background(), natskv.BucketConfig{JetStream: js})
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{m: m, js: js, bucket: bucket}
}

// rounds is how many alternating turns compared runs take, so that drift in
// the machine or the server's state over a run falls on both alike.
const rounds = 10

// compare runs n calls of each of fs, alternating between them in rounds,
// and returns each one's rate. Call i of every f gets the same i.
func compare(b *testing.B, n int, fs ...func(g, i int) error) []float64 {
	b.Helper()
	elapsed := make([]time.Duration, len(fs))
	for r := range rounds {
		from, to := n*r/rounds, n*(r+1)/rounds
		for k, f := range fs {
			elapsed[k] += parallel(b, from, to, f)
		}
	}
	rates := make([]float64, len(fs))
	for k := range fs {
		rates[k] = float64(n) / elapsed[k].Seconds()
	}
	return rates
}

// parallel makes the calls f(g, i) for i in [from, to), spread over
// benchGoroutines goroutines (g is the goroutine's number), and returns
// how long they took.
func parallel(b *testing.B, from, to int, f func(g, i int) error) time.Duration {
	b.Helper()
	var next atomic.Int64
	next.Store(int64(from))
	n := to
	var wg sync.WaitGroup
	errs := make(chan error, benchGoroutines)
	start := time.Now()
	for g := range benchGoroutines {
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
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return elapsed
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
// reports both rates and their ratio (target: manager/raw >= 0.8).
func BenchmarkClaim(b *testing.B) {
	e := newBenchEnv(b)
	n := e.m.Namespace("bench")
	raw := e.rawClients(b, "claim")
	req := lease.Request{Holder: "h", Duration: time.Hour}
	pipe := e.pipeline(b)
	b.ResetTimer()
	rates := compare(b, b.N,
		func(_, i int) error { return n.Claim(fmt.Sprintf("l%d", i), "h", time.Hour) },
		func(g, i int) error { return raw[g].ClaimLease(fmt.Sprintf("l%d", i), req) },
		func(_, i int) error { return pipe.create(fmt.Sprintf("p%d", i)) },
	)
	pipe.wait(b)
	report(b, rates[0], rates[1])
	b.ReportMetric(rates[2], "pipelined-ops/s")
	b.ReportMetric(rates[0]/rates[2], "manager/pipelined")
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
	// writes, however fast the clock runs.
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
// waiting on any one write.
type pipeline struct {
	js jetstream.JetStream
}

func (e *benchEnv) pipeline(b *testing.B) *pipeline {
	return &pipeline{js: e.js}
}

func (p *pipeline) create(key string) error {
	_, err := p.js.PublishMsgAsync(&nats.Msg{Subject: "$KV." + natskv.DefaultBucket + ".pipe." + key, Data: []byte("x")},
		jetstream.WithExpectLastSequencePerSubject(0))
	return err
}

func (p *pipeline) wait(b *testing.B) {
	select {
	case <-p.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("async publishes not acknowledged")
	}
}

func report(b *testing.B, managerRate, rawRate float64) {
	b.ReportMetric(managerRate, "manager-ops/s")
	b.ReportMetric(rawRate, "raw-ops/s")
	b.ReportMetric(managerRate/rawRate, "manager/raw")
	b.ReportMetric(0, "ns/op")
}
