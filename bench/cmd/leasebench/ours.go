package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/bench/stats"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// env is one durability mode's setup: an embedded NATS server with
// JetStream, the product's agent in this process on an in-process
// connection (as `leaseagent` runs it), and clients that reach the server
// over loopback TCP, each on its own connection.
type env struct {
	sync    bool
	dir     string
	srv     *embedded.Server
	peers   []*embedded.Server // the cluster's other nodes, with -replicas 3
	agentNC *nats.Conn
	mgr     *actors.Manager
	svc     *agent.Service

	conns   []*nats.Conn // client connections, opened as needed
	clients []*client.Client
}

func startEnv(parent string, sync bool, edit ...func(*actors.Config)) (*env, error) {
	dir, err := os.MkdirTemp(parent, "leasebench-nats-")
	if err != nil {
		return nil, err
	}
	return startEnvIn(dir, sync, edit...)
}

// minBatch is actors.Config.MinBatch for the agents the suite starts; -1:
// as leaseagent sets it for its embedded server (group commit on with
// fsync, off without: without fsync batches only cost).
var minBatch = -1

func minBatchFor(sync bool) int {
	switch {
	case minBatch >= 0:
		return minBatch
	case sync:
		return actors.DefaultMinBatch
	default:
		return 0
	}
}

// markerTTL is actors.Config.DeleteMarkerTTL for the agents the suite
// starts (-marker-ttl).
var markerTTL time.Duration

// replicas is the bucket's replica count (-replicas): 1, one embedded
// server; 3, a cluster of three in this process, the agent and the clients
// on the first.
var replicas = 1

// startEnvIn starts an env on the data in dir, which stop removes unless
// e.dir is cleared. edit changes the lease manager's configuration.
func startEnvIn(dir string, sync bool, edit ...func(*actors.Config)) (*env, error) {
	var err error
	e := &env{sync: sync, dir: dir}
	if replicas > 1 {
		err = e.startCluster(dir, sync)
	} else {
		e.srv, err = embedded.Start(embedded.Config{
			Port:    embedded.RandomPort,
			DataDir: filepath.Join(dir, "data"),
			NoSync:  !sync,
		})
	}
	if err != nil {
		e.stop()
		return nil, err
	}
	if e.agentNC, err = e.srv.Connect(nats.Name("leaseagent")); err != nil {
		e.stop()
		return nil, err
	}
	quiet := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := actors.Config{
		MinBatch:        minBatchFor(sync),
		DeleteMarkerTTL: markerTTL,
		Interest:        e.srv.Interest, // as leaseagent with its embedded server
		Conn:            e.agentNC,
		Replicas:        replicas,
		MaxDuration:     24 * time.Hour,
		Logger:          quiet,
	}
	for _, e := range edit {
		e(&cfg)
	}
	if replicas > 1 {
		// A new cluster elects its JetStream leader on its own time, with
		// no event to wait on, and a request sent before then goes
		// unanswered: short attempts until the bucket opens.
		for {
			attempt, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
			e.mgr, err = actors.New(attempt, cfg)
			cancelAttempt()
			if err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	} else {
		e.mgr, err = actors.New(ctx, cfg)
	}
	if err != nil {
		e.stop()
		return nil, fmt.Errorf("start the lease manager: %w", err)
	}
	e.svc, err = agent.Start(agent.Config{
		Conn:      e.agentNC,
		Manager:   e.mgr,
		Logger:    quiet,
		Ownership: &agent.Ownership{AgentID: "bench"},
	})
	if err != nil {
		e.stop()
		return nil, fmt.Errorf("start the agent service: %w", err)
	}
	return e, nil
}

// startCluster starts replicas clustered servers on loopback, data under
// dir; e.srv is the first.
func (e *env) startCluster(dir string, durable bool) error {
	var routes []string
	var ports []int
	for range replicas {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		routes = append(routes, "nats-route://"+l.Addr().String())
		_ = l.Close()
	}
	servers := make([]*embedded.Server, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() {
			servers[i], errs[i] = embedded.Start(embedded.Config{
				Name: fmt.Sprintf("n%d", i), Port: embedded.RandomPort,
				DataDir: filepath.Join(dir, fmt.Sprintf("data-n%d", i)), NoSync: !durable,
				Cluster: embedded.Cluster{Name: "leasebench", Host: "127.0.0.1", Port: ports[i], Routes: routes},
			})
		})
	}
	wg.Wait()
	for i, srv := range servers {
		if errs[i] != nil {
			for _, s := range servers {
				if s != nil {
					s.Shutdown()
				}
			}
			return fmt.Errorf("start cluster node %d: %w", i, errs[i])
		}
		if i == 0 {
			e.srv = srv
		} else {
			e.peers = append(e.peers, srv)
		}
	}
	return nil
}

func (e *env) stop() {
	for _, nc := range e.conns {
		nc.Close()
	}
	if e.svc != nil {
		_ = e.svc.Stop()
	}
	if e.mgr != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = e.mgr.Stop(ctx)
		cancel()
	}
	if e.agentNC != nil {
		e.agentNC.Close()
	}
	if e.srv != nil {
		e.srv.Shutdown()
	}
	for _, p := range e.peers {
		p.Shutdown()
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// tcpConn opens a new client connection over loopback TCP.
func (e *env) tcpConn() (*nats.Conn, error) {
	nc, err := nats.Connect(e.srv.ClientURL(), nats.Name("leasebench"))
	if err != nil {
		return nil, err
	}
	e.conns = append(e.conns, nc)
	return nc, nil
}

// clientsN returns n clients, each on its own TCP connection.
func (e *env) clientsN(n int) ([]*client.Client, error) {
	for len(e.clients) < n {
		nc, err := e.tcpConn()
		if err != nil {
			return nil, err
		}
		c, err := client.New(nc)
		if err != nil {
			return nil, err
		}
		e.clients = append(e.clients, c)
	}
	return e.clients[:n], nil
}

// ---- limits ----

// rawKVSequential: n goroutines, each updating its own key at the revision
// it last wrote and waiting for the acknowledgement before the next write
// (publish async, wait on the future: what natskv does). One in-process
// connection, like the agent's.
func (e *env) rawKVSequential(d time.Duration, n int, tag string) (stats.Result, error) {
	nc, err := e.srv.Connect()
	if err != nil {
		return stats.Result{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return stats.Result{}, err
	}
	last := make([]uint64, n)
	subject := func(g int) string {
		return fmt.Sprintf("$KV.%s.bench.seq.%s.%d", natskv.DefaultBucket, tag, g)
	}
	return closedLoop(d, n, func(g, _ int) error {
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: subject(g), Data: []byte("holder-and-expiry-")},
			jetstream.WithExpectLastSequencePerSubject(last[g]))
		if err != nil {
			return err
		}
		select {
		case ack := <-f.Ok():
			last[g] = ack.Sequence
			return nil
		case err := <-f.Err():
			return err
		}
	}), nil
}

// rawKVPipelined: n goroutines, each publishing create-if-absent writes of
// new keys without waiting, at most 4096 in flight in all; a write's
// latency is from its publish to its acknowledgement, so mostly the queue
// ahead of it (4096 / rate).
func (e *env) rawKVPipelined(d time.Duration, n int, tag string) (stats.Result, error) {
	nc, err := e.srv.Connect()
	if err != nil {
		return stats.Result{}, err
	}
	defer nc.Close()
	const maxPending = 4096
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxPending))
	if err != nil {
		return stats.Result{}, err
	}
	window := max(maxPending/n, 1)
	type inflight struct {
		f jetstream.PubAckFuture
		t time.Time
	}
	var (
		mu  sync.Mutex
		res stats.Result
		wg  sync.WaitGroup
	)
	start, cpu := time.Now(), cpuTime()
	deadline := start.Add(d)
	for g := range n {
		ch := make(chan inflight, window)
		wg.Add(2)
		go func() { // publisher
			defer wg.Done()
			defer close(ch)
			for i := 0; time.Now().Before(deadline); i++ {
				subj := fmt.Sprintf("$KV.%s.bench.pipe.%s.%d.%d", natskv.DefaultBucket, tag, g, i)
				t := time.Now()
				f, err := js.PublishMsgAsync(&nats.Msg{Subject: subj, Data: []byte("holder-and-expiry-")},
					jetstream.WithExpectLastSequencePerSubject(0), jetstream.WithStallWait(time.Minute))
				if err != nil {
					mu.Lock()
					res.Errors++
					if res.FirstError == nil {
						res.FirstError = err
					}
					mu.Unlock()
					return
				}
				ch <- inflight{f, t}
			}
		}()
		go func() { // collector, in publish order
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			errs := 0
			var firstErr error
			for w := range ch {
				select {
				case <-w.f.Ok():
					lat = append(lat, time.Since(w.t))
				case err := <-w.f.Err():
					errs++
					if firstErr == nil {
						firstErr = err
					}
				}
			}
			mu.Lock()
			res.Add(lat, errs, firstErr)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed, res.CPU = time.Since(start), cpuTime()-cpu
	return res, nil
}

// echo: a core NATS responder on an in-process connection (where the
// agent's service listens) answering n clients, each on its own TCP
// connection, with a reply of replySize bytes.
func (e *env) echo(d time.Duration, n int, reqSize, replySize int) (stats.Result, error) {
	rnc, err := e.srv.Connect()
	if err != nil {
		return stats.Result{}, err
	}
	defer rnc.Close()
	reply := make([]byte, replySize)
	subject := fmt.Sprintf("bench.echo.%d", replySize)
	sub, err := rnc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(reply) })
	if err != nil {
		return stats.Result{}, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := rnc.Flush(); err != nil {
		return stats.Result{}, err
	}
	conns := make([]*nats.Conn, n)
	for g := range conns {
		if conns[g], err = nats.Connect(e.srv.ClientURL()); err != nil {
			return stats.Result{}, err
		}
		defer conns[g].Close()
	}
	req := make([]byte, reqSize)
	return closedLoop(d, n, func(g, _ int) error {
		_, err := conns[g].Request(subject, req, 5*time.Second)
		return err
	}), nil
}

// fsyncRate: append 64 bytes to a file in the data directory and fsync it,
// again and again, from one goroutine.
func fsyncRate(dir string, d time.Duration) (stats.Result, error) {
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return stats.Result{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 64)
	return closedLoop(d, 1, func(_, _ int) error {
		if _, err := f.Write(buf); err != nil {
			return err
		}
		return f.Sync()
	}), nil
}

// ---- ours ----

// cycles: each client claims a lease nobody has claimed, then releases it.
func (e *env) cycles(d time.Duration, n int) (stats.Result, error) {
	cs, err := e.clientsN(n)
	if err != nil {
		return stats.Result{}, err
	}
	ctx := context.Background()
	return closedLoop(d, n, func(g, i int) error {
		ns := cs[g].Namespace("cycles")
		name := fmt.Sprintf("c%d-%d-%d", n, g, i)
		if err := ns.ClaimContext(ctx, name, "h", time.Minute); err != nil {
			return err
		}
		return ns.Release(ctx, name, "h")
	}), nil
}

// holdOne makes each of n clients hold one lease in namespace "held".
func (e *env) holdOne(n int) ([]*client.Client, error) {
	cs, err := e.clientsN(n)
	if err != nil {
		return nil, err
	}
	for g := range n {
		if err := cs[g].Namespace("held").Claim(fmt.Sprintf("e%d-%d", n, g), "h", time.Hour); err != nil {
			return nil, err
		}
	}
	return cs, nil
}

// extends: each client extends the lease it holds, again and again, each
// time moving its expiry later. As holders renew, for the same duration
// each time, unless longer: then the duration grows with each call, so the
// record no longer covers it and every extension is written.
func (e *env) extends(d time.Duration, n int, longer bool) (stats.Result, error) {
	cs, err := e.holdOne(n)
	if err != nil {
		return stats.Result{}, err
	}
	ctx := context.Background()
	return closedLoop(d, n, func(g, i int) error {
		duration := time.Hour
		if longer {
			duration += time.Duration(i+1) * time.Millisecond
		}
		return cs[g].Namespace("held").ClaimContext(ctx, fmt.Sprintf("e%d-%d", n, g), "h", duration)
	}), nil
}

// checks: each client checks that it holds its lease.
func (e *env) checks(d time.Duration, n int) (stats.Result, error) {
	cs, err := e.holdOne(n)
	if err != nil {
		return stats.Result{}, err
	}
	tokens := make([]*client.Token, n)
	for g := range n {
		tokens[g] = cs[g].Namespace("held").Token(fmt.Sprintf("e%d-%d", n, g), "h").(*client.Token)
	}
	ctx := context.Background()
	return closedLoop(d, n, func(g, _ int) error {
		return tokens[g].CheckContext(ctx, nil)
	}), nil
}

// fillList claims size leases in namespace "list" (once per env) and
// returns the size in bytes of a list reply.
func (e *env) fillList(size int) (int, error) {
	cs, err := e.clientsN(32)
	if err != nil {
		return 0, err
	}
	err = parallelEach(32, size, func(i int) error {
		return cs[i%32].Namespace("list").Claim(fmt.Sprintf("lease-%06d", i), fmt.Sprintf("holder-%06d", i), 12*time.Hour)
	})
	if err != nil {
		return 0, fmt.Errorf("fill the list namespace: %w", err)
	}
	body, err := protocol.Encode(&messages.ListRequest{}, false)
	if err != nil {
		return 0, err
	}
	nc, err := e.tcpConn()
	if err != nil {
		return 0, err
	}
	m, err := nc.Request(protocol.RequestSubject(protocol.DefaultPrefix, protocol.OpList, "list"), body, 10*time.Second)
	if err != nil {
		return 0, err
	}
	return len(m.Data), nil
}

// list: each client lists the namespace of size leases.
func (e *env) list(d time.Duration, n, size int) (stats.Result, error) {
	cs, err := e.clientsN(n)
	if err != nil {
		return stats.Result{}, err
	}
	ctx := context.Background()
	return closedLoop(d, n, func(g, _ int) error {
		ls, err := cs[g].Namespace("list").Leases(ctx)
		if err != nil {
			return err
		}
		if len(ls) != size {
			return fmt.Errorf("listed %d leases, want %d", len(ls), size)
		}
		return nil
	}), nil
}
