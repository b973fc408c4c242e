package main

import (
	"sync"
	"syscall"
	"time"

	"github.com/leaseagent/lease/bench/stats"
)

// maxErrors stops a row early: a workload that fails this often measures
// its failures, not the service.
const maxErrors = 100

// closedLoop runs op from n goroutines for d, each calling it again as soon
// as the previous call returned (g is the goroutine's number, i counts its
// calls from 0), and returns the calls that succeeded, their latencies and
// how long the row took.
func closedLoop(d time.Duration, n int, op func(g, i int) error) stats.Result {
	var (
		mu  sync.Mutex
		res stats.Result
		wg  sync.WaitGroup
	)
	start, cpu := time.Now(), cpuTime()
	deadline := start.Add(d)
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := tally{lat: make([]time.Duration, 0, 1024)}
			for i := 0; time.Now().Before(deadline) && t.errs < maxErrors; i++ {
				_ = t.time(func() error { return op(g, i) })
			}
			t.into(&mu, &res)
		}()
	}
	wg.Wait()
	res.Elapsed, res.CPU = time.Since(start), cpuTime()-cpu
	return res
}

// cpuTime returns the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// tally is one worker's share of a row: its calls' latencies, how many
// failed and the first error.
type tally struct {
	lat   []time.Duration
	errs  int
	first error
}

// time calls op and records its latency, or its error, which it returns.
func (t *tally) time(op func() error) error {
	start := time.Now()
	if err := op(); err != nil {
		t.errs++
		if t.first == nil {
			t.first = err
		}
		return err
	}
	t.lat = append(t.lat, time.Since(start))
	return nil
}

// into adds the tally to the row's result, under mu.
func (t *tally) into(mu *sync.Mutex, res *stats.Result) {
	mu.Lock()
	defer mu.Unlock()
	res.Add(t.lat, t.errs, t.first)
}

// parallelEach calls op(i) for i in [0, count) from n goroutines and
// returns the first error.
func parallelEach(n, count int, op func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := op(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range count {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}
