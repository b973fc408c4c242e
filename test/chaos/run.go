package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/natskv"
)

// RunConfig says what a run does. Zero fields take the defaults below.
type RunConfig struct {
	// Agent is the system under test, already serving: one agent, which
	// clients reach through a Proxy. Either Agent or Cluster is set.
	Agent *Agent
	// Cluster is the system under test, already serving: clients connect
	// to its nodes directly, client i first to node i mod n.
	Cluster *Cluster
	// Seed drives every random choice: the operations, their leases and
	// durations, the think times, the faults. Timing still differs from
	// run to run, so a seed replays the choices, not the interleaving.
	Seed uint64
	// Duration is how long the random workload runs.
	Duration time.Duration
	// Faults turns fault injection on.
	Faults bool
	// Leases the holders compete for; "a", "b", "c" if empty.
	Leases []string
	// Holders is how many clients compete for Leases; 6 if zero. Each is
	// one holder, one goroutine and one NATS connection.
	Holders int
	// MinLease and MaxLease bound the durations claimed; 300ms and 1s if
	// zero.
	MinLease, MaxLease time.Duration
	// Logf logs the faults and the phases of the run; nothing if nil.
	Logf func(format string, args ...any)
}

// The run's fixed parts.
const (
	namespace = "chaos"
	// quietLease is held now and then by one owner and waited on by one
	// watcher, and stays free for longer than the wait bound in between,
	// so that the waiters' bound is checked (the competed leases are
	// rarely free for long).
	quietLease = "quiet"
	// opTimeout bounds each claim, check and release, retries included.
	opTimeout = 10 * time.Second
	// waitTimeout bounds each wait: longer than the wait bound, so a
	// waiter that misses a release shows up as too slow.
	waitTimeout = 10 * time.Second
	// requestTimeout bounds each request; pauses and delays stay well
	// under it, so requests are answered within their call.
	requestTimeout = 5 * time.Second
	// waitPoll is how often a waiter asks again.
	waitPoll = 500 * time.Millisecond
	// lostRequestLinger is how long a kill or a cut may hold a client up
	// after it healed: a request lost to it is retried when it times out.
	lostRequestLinger = requestTimeout + time.Second
	// calmMargin is how long past the wait bound the first calm spell
	// lasts; firstCalmWait how long faults wait for it at most.
	calmMargin    = 500 * time.Millisecond
	firstCalmWait = 5 * time.Second
	// probeDuration is how long the leases claimed before the final
	// kill are held: long enough to outlive the restart.
	probeDuration = 30 * time.Second
)

func (c *RunConfig) defaults() {
	if len(c.Leases) == 0 {
		c.Leases = []string{"a", "b", "c"}
	}
	if c.Holders == 0 {
		c.Holders = 6
	}
	if c.MinLease == 0 {
		c.MinLease = 300 * time.Millisecond
	}
	if c.MaxLease == 0 {
		c.MaxLease = time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// CheckConfig returns the Config to check a run's history with: a waiter
// must return within four of its polls (it also wakes on the expired
// event at once) after its lease became free, plus each nearby fault's
// length and how long it lingers: a second for clients to reconnect, or
// for kills and cuts lostRequestLinger.
func (c RunConfig) CheckConfig() Config {
	return Config{WaitBound: 4 * waitPoll, FaultSlack: time.Second}
}

// Run runs the workload against cfg.Agent for cfg.Duration, injecting
// faults if asked, then claims every lease for long, kills and restarts the
// agent, and checks the claims survived. It returns everything the clients
// saw. Every fault is healed before Run returns.
func Run(ctx context.Context, cfg RunConfig) (History, error) {
	cfg.defaults()
	r := &run{cfg: cfg, rec: NewRecorder()}
	if cfg.Cluster == nil {
		var err error
		if r.proxy, err = NewProxy(cfg.Agent.Addr()); err != nil {
			return History{}, err
		}
		defer r.proxy.Close()
	}

	// Clients: the competing holders, then the quiet lease's owner and
	// watcher.
	n := cfg.Holders + 2
	for i := range n {
		w, err := r.newWorker(i)
		if err != nil {
			return History{}, err
		}
		defer w.nc.Close()
		r.workers = append(r.workers, w)
	}

	work, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var (
		wg       sync.WaitGroup
		faultErr error
	)
	for _, w := range r.workers[:cfg.Holders] {
		wg.Go(func() { w.compete(work) })
	}
	calm := make(chan time.Duration, 1)
	wg.Go(func() { r.workers[cfg.Holders].ownQuiet(work, calm) })
	wg.Go(func() { r.workers[cfg.Holders+1].watchQuiet(work) })
	if cfg.Faults {
		wg.Go(func() { faultErr = r.injectFaults(work, calm) })
	}
	wg.Wait()
	if faultErr != nil {
		return r.rec.History(), faultErr
	}
	if ctx.Err() != nil {
		return r.rec.History(), ctx.Err()
	}
	if err := r.probe(ctx); err != nil {
		return r.rec.History(), err
	}
	return r.rec.History(), nil
}

// run is the state of one Run.
type run struct {
	cfg     RunConfig
	rec     *Recorder
	proxy   *Proxy
	workers []*worker
}

// worker is one client: a holder with its own NATS connection.
type worker struct {
	id     int
	holder string
	nc     *nats.Conn
	ns     *client.Namespace
	rng    *rand.Rand
	rec    *Recorder
	cfg    *RunConfig
	// until is, for each lease this holder claimed, when its guarantee
	// runs out (as far as it knows).
	until map[string]time.Duration
}

func (r *run) newWorker(i int) (*worker, error) {
	// A request is sent at once or fails: with nats.go's reconnect buffer
	// on, one sent while disconnected could reach the agent after its call
	// gave up, which no history can place.
	var url string
	if c := r.cfg.Cluster; c != nil {
		urls := c.URLs()
		k := i % len(urls)
		url = strings.Join(append(urls[k:], urls[:k]...), ",")
	} else {
		url = "nats://" + r.proxy.Addr()
	}
	nc, err := nats.Connect(url,
		nats.DontRandomize(),
		nats.Name(fmt.Sprintf("chaos-%d", i)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectJitter(10*time.Millisecond, 10*time.Millisecond),
		nats.ReconnectBufSize(-1),
		nats.IgnoreDiscoveredServers(),
	)
	if err != nil {
		return nil, fmt.Errorf("client %d: connect to %s: %w", i, url, err)
	}
	c, err := client.New(nc,
		client.WithRequestTimeout(requestTimeout),
		client.WithRetry(20*time.Millisecond, 200*time.Millisecond),
		client.WithWaitPoll(waitPoll),
	)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &worker{
		id: i, holder: fmt.Sprintf("holder-%d", i), nc: nc, ns: c.Namespace(namespace),
		rng: rand.New(rand.NewPCG(r.cfg.Seed, uint64(i))), rec: r.rec, cfg: &r.cfg,
		until: map[string]time.Duration{},
	}, nil
}

// compete runs random operations on random leases until ctx ends.
func (w *worker) compete(ctx context.Context) {
	for pause(ctx, w.between(10*time.Millisecond, 60*time.Millisecond)) {
		if !w.connected(ctx) {
			continue
		}
		name := w.cfg.Leases[w.rng.IntN(len(w.cfg.Leases))]
		holds := w.until[name] > w.rec.Now()
		switch p := w.rng.IntN(100); {
		case holds && p < 40:
			w.claim(name, w.duration()) // extend
		case holds && p < 65:
			w.check(name)
		case holds:
			w.release(name)
		case p < 60:
			w.claim(name, w.duration())
		case p < 75:
			w.check(name)
		default:
			w.wait(ctx, name)
		}
	}
}

// ownQuiet holds the quiet lease for half a second to a second and a
// half, extending it, then releases it and leaves it free for one to four
// seconds more than the wait bound (faults nearby lengthen the bound).
//
// After its first release it sends on calm the time until which no fault
// may begin: the wait bound and a margin after the release, so that every
// run holds its waiters to the bound at least once. Later faults come at
// random and often leave the lease free too briefly to tell.
func (w *worker) ownQuiet(ctx context.Context, calm chan<- time.Duration) {
	bound := w.cfg.CheckConfig().WaitBound
	for w.connected(ctx) {
		hold := w.rec.Now() + w.between(500*time.Millisecond, 1500*time.Millisecond)
		for ctx.Err() == nil && w.rec.Now() < hold {
			if w.claim(quietLease, w.cfg.MaxLease) != OK || !pause(ctx, w.cfg.MaxLease/3) {
				break
			}
		}
		if w.release(quietLease) == OK && calm != nil {
			calm <- w.rec.Now() + bound + calmMargin
			calm = nil
		}
		pause(ctx, bound+w.between(time.Second, 4*time.Second))
	}
}

// watchQuiet waits on the quiet lease again and again.
func (w *worker) watchQuiet(ctx context.Context) {
	for w.connected(ctx) {
		w.wait(ctx, quietLease)
		pause(ctx, w.between(100*time.Millisecond, 300*time.Millisecond))
	}
}

// connected waits until the worker's NATS connection is up, for at most
// opTimeout, and reports whether it is and ctx has not ended. With the
// reconnect buffer off, a request made while reconnecting fails at once
// and says nothing; waiting for the connection makes the operations count.
func (w *worker) connected(ctx context.Context) bool {
	if w.nc.IsConnected() {
		return ctx.Err() == nil
	}
	up := w.nc.StatusChanged(nats.CONNECTED)
	defer w.nc.RemoveStatusListener(up)
	if w.nc.IsConnected() {
		return ctx.Err() == nil
	}
	t := time.NewTimer(opTimeout)
	defer t.Stop()
	select {
	case <-up:
	case <-t.C:
	case <-ctx.Done():
	}
	return w.nc.IsConnected() && ctx.Err() == nil
}

// claim claims a lease and, if that succeeded, checks it at once to learn
// the fencing token of the tenure.
func (w *worker) claim(name string, d time.Duration) Result {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	op := Op{Client: w.id, Kind: OpClaim, Lease: name, Holder: w.holder, Duration: d, Start: w.rec.Now()}
	err := w.ns.ClaimContext(ctx, name, w.holder, d)
	op.End = w.rec.Now()
	op.Result, op.Err = result(err)
	switch op.Result {
	case OK:
		w.until[name] = op.Start + d
		if token, res := w.check(name); res == OK {
			op.Token = token
		}
	case Denied:
		delete(w.until, name)
	}
	w.rec.Add(op)
	return op.Result
}

// check asks whether the worker holds a lease, with a fence for the token.
func (w *worker) check(name string) (uint64, Result) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var fence natskv.Fence
	op := Op{Client: w.id, Kind: OpCheck, Lease: name, Holder: w.holder, Start: w.rec.Now()}
	err := w.ns.Token(name, w.holder).(*client.Token).CheckContext(ctx, &fence)
	op.End = w.rec.Now()
	op.Result, op.Err = result(err)
	switch {
	case op.Result == OK:
		op.Token = fence.Revision // 0 if none: the checker reports it
	case op.Result == NotHeld:
		delete(w.until, name)
	}
	w.rec.Add(op)
	return op.Token, op.Result
}

// release gives a lease up.
func (w *worker) release(name string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	op := Op{Client: w.id, Kind: OpRelease, Lease: name, Holder: w.holder, Start: w.rec.Now()}
	err := w.ns.Release(ctx, name, w.holder)
	op.End = w.rec.Now()
	op.Result, op.Err = result(err)
	delete(w.until, name)
	w.rec.Add(op)
	return op.Result
}

// wait waits until a lease is free, for at most waitTimeout or until ctx
// ends. A wait cut short by ctx is still recorded: it was running until
// then.
func (w *worker) wait(ctx context.Context, name string) Result {
	ctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	op := Op{Client: w.id, Kind: OpWait, Lease: name, Start: w.rec.Now()}
	err := w.ns.WaitUntilExpiredContext(ctx, name)
	op.End = w.rec.Now()
	op.Result, op.Err = result(err)
	w.rec.Add(op)
	return op.Result
}

// result classifies a call's error.
func result(err error) (Result, string) {
	switch {
	case err == nil:
		return OK, ""
	case errors.Is(err, lease.ErrClaimDenied):
		return Denied, ""
	case errors.Is(err, lease.ErrNotHeld):
		return NotHeld, ""
	}
	return Failed, err.Error()
}

// duration returns a random lease duration, in whole milliseconds.
func (w *worker) duration() time.Duration {
	return w.between(w.cfg.MinLease, w.cfg.MaxLease).Truncate(time.Millisecond)
}

// between returns a random duration in [lo, hi].
func (w *worker) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)+1))
}

// pause waits for d (think time between operations, not synchronisation)
// and reports whether ctx is still going.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// injectFaults injects a random fault one to five seconds after the last
// one healed, until ctx ends. Each fault is healed before the next begins,
// and before it returns. The first waits, besides, for the calm time that
// the quiet lease's owner sends (for at most firstCalmWait): see ownQuiet.
func (r *run) injectFaults(ctx context.Context, calm <-chan time.Duration) error {
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 1<<32))
	first := true
	for pause(ctx, randBetween(rng, time.Second, 5*time.Second)) {
		if first {
			first = false
			if !r.awaitCalm(ctx, calm) {
				break
			}
		}
		f := Fault{Start: r.rec.Now()}
		injected, err := true, error(nil)
		if r.cfg.Cluster != nil {
			injected, err = r.clusterFault(ctx, rng, &f)
		} else {
			err = r.agentFault(rng, &f)
		}
		f.End = r.rec.Now()
		r.cfg.Logf("%s", f)
		if !injected {
			// Nothing happened: the checker must not excuse slow
			// operations by it, nor a test count it.
			continue
		}
		r.rec.AddFault(f)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	return nil
}

// awaitCalm waits until the time the quiet lease's owner sends on calm,
// or firstCalmWait if it sends none, and reports whether ctx is still
// going.
func (r *run) awaitCalm(ctx context.Context, calm <-chan time.Duration) bool {
	t := time.NewTimer(firstCalmWait)
	defer t.Stop()
	select {
	case until := <-calm:
		return pause(ctx, until-r.rec.Now())
	case <-t.C:
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

// agentFault injects one fault into a single agent or its clients'
// connections, and heals it.
func (r *run) agentFault(rng *rand.Rand, f *Fault) error {
	between := func(lo, hi time.Duration) time.Duration { return randBetween(rng, lo, hi) }
	var err error
	switch rng.IntN(4) {
	case 0:
		f.Kind, f.Linger = "kill", lostRequestLinger
		err = r.killAndRestart()
	case 1:
		// Longer than any lease: every lease expires while the agent
		// cannot act, and it must notice when it wakes.
		d := between(r.cfg.MaxLease+200*time.Millisecond, r.cfg.MaxLease+time.Second)
		f.Kind, f.Detail = "pause", fmt.Sprintf("SIGSTOP for %v", d.Round(time.Millisecond))
		if err = r.cfg.Agent.Pause(); err == nil {
			time.Sleep(d) // the fault itself
			err = r.cfg.Agent.Resume()
		}
	case 2:
		d := between(300*time.Millisecond, 1500*time.Millisecond)
		f.Kind, f.Detail = "cut", fmt.Sprintf("clients cut off for %v", d.Round(time.Millisecond))
		f.Linger = lostRequestLinger
		r.proxy.Cut()
		time.Sleep(d) // the fault itself
		r.proxy.Restore()
	case 3:
		delay := between(20*time.Millisecond, 200*time.Millisecond).Round(time.Millisecond)
		d := between(time.Second, 3*time.Second)
		f.Kind, f.Detail = "delay", fmt.Sprintf("%v each way for %v", delay, d.Round(time.Millisecond))
		r.proxy.Delay(delay)
		time.Sleep(d) // the fault itself
		r.proxy.Delay(0)
	}
	return err
}

// clusterFault injects one fault into a node of the cluster, and heals it:
// kill -9 the node whose agent owns the namespace, or the node that leads
// the bucket's stream, or any node; or SIGSTOP the owner for longer than
// its ownership lasts, so that another agent takes over while it sleeps and
// it must stop answering when it wakes. Each lingers for an ownership
// duration beyond the usual: that is how long the namespace may go
// unserved. It reports false if it found no victim (no owner yet, or no
// stream leader for a moment) and injected nothing.
func (r *run) clusterFault(ctx context.Context, rng *rand.Rand, f *Fault) (injected bool, err error) {
	c := r.cfg.Cluster
	f.Linger = c.OwnershipDuration + lostRequestLinger
	victim := rng.IntN(len(c.Nodes))
	kinds := []string{"kill-owner", "kill-leader", "kill-node", "pause-owner"}
	f.Kind = kinds[rng.IntN(len(kinds))]
	switch f.Kind {
	case "kill-owner", "pause-owner":
		victim, err = c.Owner(ctx, namespace)
	case "kill-leader":
		victim, err = c.StreamLeader(ctx)
	}
	if err != nil {
		f.Detail = fmt.Sprintf("(not injected: %v)", err)
		return false, nil
	}
	node := c.Nodes[victim]
	if f.Kind == "pause-owner" {
		d := c.OwnershipDuration + randBetween(rng, 500*time.Millisecond, 1500*time.Millisecond)
		f.Detail = fmt.Sprintf("node-%d SIGSTOP for %v", victim, d.Round(time.Millisecond))
		if err := node.Pause(); err != nil {
			return true, err
		}
		time.Sleep(d) // the fault itself
		return true, node.Resume()
	}
	down := randBetween(rng, 0, 2*time.Second)
	f.Detail = fmt.Sprintf("node-%d, restarted after %v", victim, down.Round(time.Millisecond))
	if err := node.Kill(); err != nil {
		return true, err
	}
	time.Sleep(down) // the fault itself
	return true, node.Restart()
}

// randBetween returns a random duration in [lo, hi].
func randBetween(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// killAndRestart kills the agent (or every node of the cluster) with
// SIGKILL and starts it again on the same data directory and ports.
func (r *run) killAndRestart() error {
	if c := r.cfg.Cluster; c != nil {
		if err := c.Each(func(_ int, a *Agent) error { return a.Kill() }); err != nil {
			return err
		}
		return c.Each(func(_ int, a *Agent) error { return a.Restart() })
	}
	if err := r.cfg.Agent.Kill(); err != nil {
		return err
	}
	return r.cfg.Agent.Restart()
}

// probe checks that acknowledged claims survive a crash: one holder per
// lease claims it for probeDuration, the agent is killed and restarted,
// and each holder checks it still holds its lease (a "not held" is
// invariant 5's to report). The leases are released at the end.
func (r *run) probe(ctx context.Context) error {
	leases := append(append([]string(nil), r.cfg.Leases...), quietLease)
	claimed := map[string]*worker{}
	for i, name := range leases {
		w := r.workers[i%len(r.workers)]
		// The lease may still be held by another worker for up to
		// MaxLease (or longer if the agent restarted since): try for a
		// while.
		deadline := r.rec.Now() + opTimeout
		for r.rec.Now() < deadline {
			if !w.connected(ctx) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue
			}
			if res := w.claim(name, probeDuration); res == OK {
				claimed[name] = w
				break
			}
			if !pause(ctx, 50*time.Millisecond) {
				return ctx.Err()
			}
		}
		if claimed[name] == nil {
			// Without it the final kill proves nothing about this lease.
			return fmt.Errorf("probe: %s could not claim %s within %v before the final kill", w.holder, name, opTimeout)
		}
	}
	f := Fault{Kind: "kill", Detail: "(final: acknowledged claims must survive)", Start: r.rec.Now()}
	err := r.killAndRestart()
	f.End = r.rec.Now()
	r.rec.AddFault(f)
	r.cfg.Logf("%s", f)
	if err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	// Check until the agent answers (clients are reconnecting): the
	// checker holds each answer to the claim made before the kill.
	for _, name := range leases {
		w, answered := claimed[name], false
		// Generous: after the kill of every node of a cluster, elections
		// and the namespace's load come first.
		for deadline := r.rec.Now() + 3*opTimeout; !answered && r.rec.Now() < deadline; {
			if !w.connected(ctx) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue
			}
			if _, res := w.check(name); res != Failed {
				answered = true
			} else if !pause(ctx, 50*time.Millisecond) {
				return ctx.Err()
			}
		}
		if !answered {
			return fmt.Errorf("probe: no check of %s by %s was answered within %v after the final kill", name, w.holder, 3*opTimeout)
		}
	}
	for _, name := range leases {
		if w := claimed[name]; w != nil {
			w.release(name)
		}
	}
	r.cfg.Logf("probe: %d of %d leases claimed for %v across the final kill", len(claimed), len(leases), probeDuration)
	return nil
}
