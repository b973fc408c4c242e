package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/bench/stats"
	"github.com/leaseagent/lease/protocol"
)

// steadyResult is a namespace of many leases whose every holder renews at
// half the lease duration, as holders are told to: the load a lease service
// carries all day.
type steadyResult struct {
	Leases   int           `json:"leases"`
	Duration time.Duration `json:"duration_ns"`
	// Needed is the renewal rate the holders ask for: Leases / (Duration/2).
	Needed float64 `json:"needed_per_s"`
	// Renewals are the renewals made over the run: rate, latency, errors.
	Renewals stats.Summary `json:"renewals"`
	// Lag is how far behind its schedule the last renewal of a round
	// started, at most: if the service cannot keep up, it grows.
	Lag time.Duration `json:"max_lag_ns"`
	// Lost counts leases that expired or were refused a renewal; 0 is
	// the only right answer.
	Lost int64 `json:"lost"`
	// CPU is the cores this process (agent, embedded server and the
	// clients) kept busy during the run, on average.
	CPU float64 `json:"cpu_cores"`
}

// steady claims count leases for d from 32 clients, then has every holder
// renew its lease every d/2 on a fixed schedule for rounds renewal rounds,
// counting any lease that expires meanwhile.
func steady(parent string, durable bool, count int, d time.Duration, rounds int) (steadyResult, error) {
	res := steadyResult{Leases: count, Duration: d, Needed: float64(count) / (d / 2).Seconds()}
	e, err := startEnv(parent, durable)
	if err != nil {
		return res, err
	}
	defer e.stop()
	const clients = 32
	cs, err := e.clientsN(clients)
	if err != nil {
		return res, err
	}
	watch, err := e.tcpConn()
	if err != nil {
		return res, err
	}
	var expired atomic.Int64
	if _, err := watch.Subscribe(protocol.EventSubject(protocol.DefaultPrefix, protocol.EventExpired, "steady", "*"), func(*nats.Msg) { expired.Add(1) }); err != nil {
		return res, err
	}
	if err := watch.Flush(); err != nil {
		return res, err
	}
	name := func(i int) string { return fmt.Sprintf("lease-%07d", i) }
	holder := func(i int) string { return fmt.Sprintf("holder-%07d", i) }
	fillStart := time.Now()
	if err := parallelEach(clients, count, func(i int) error {
		return cs[i%clients].Namespace("steady").Claim(name(i), holder(i), d)
	}); err != nil {
		return res, fmt.Errorf("claim: %w", err)
	}
	if fill := time.Since(fillStart); fill > d/2 {
		return res, fmt.Errorf("claiming %d leases took %v, more than half their duration %v: use fewer leases or a longer -steady-duration", count, fill, d)
	}

	// Lease i is renewed at start + i/count*(d/2) in the first round and
	// d/2 later in each next one: an even load, each lease renewed d/2
	// after its last renewal was due (its first, relative to the claim).
	var (
		mu     sync.Mutex
		result stats.Result
		wg     sync.WaitGroup
		lag    atomic.Int64
		lost   atomic.Int64
	)
	start := time.Now()
	cpu0 := cpuTime()
	for g := range clients {
		wg.Go(func() {
			var t tally
			for r := range rounds {
				for i := g; i < count; i += clients {
					due := start.Add(time.Duration(r)*(d/2) + time.Duration(float64(d/2)*float64(i)/float64(count)))
					if wait := time.Until(due); wait > 0 {
						time.Sleep(wait) // pacing: the schedule is the workload
					} else {
						for l := lag.Load(); int64(-wait) > l && !lag.CompareAndSwap(l, int64(-wait)); l = lag.Load() {
						}
					}
					if err := t.time(func() error { return cs[g].Namespace("steady").Claim(name(i), holder(i), d) }); err != nil {
						lost.Add(1)
					}
				}
			}
			t.into(&mu, &result)
		})
	}
	wg.Wait()
	result.Elapsed = time.Since(start)
	res.CPU = (cpuTime() - cpu0).Seconds() / result.Elapsed.Seconds()
	res.Renewals = result.Summarise()
	res.Lag = time.Duration(lag.Load())
	// Expired events are published after the expiry: flush the watcher's
	// connection so that any sent before the run ended are counted.
	if err := watch.Flush(); err != nil {
		return res, err
	}
	res.Lost = lost.Load() + expired.Load()
	return res, nil
}
