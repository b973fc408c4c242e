package main

import (
	"sync"
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
	start := time.Now()
	deadline := start.Add(d)
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			errs := 0
			var firstErr error
			for i := 0; time.Now().Before(deadline) && errs < maxErrors; i++ {
				t := time.Now()
				if err := op(g, i); err != nil {
					if firstErr == nil {
						firstErr = err
					}
					errs++
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.Add(lat, errs, firstErr)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
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
