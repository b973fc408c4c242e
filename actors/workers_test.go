package actors

import (
	"sync"
	"testing"
)

// Functions beyond the workers' maximum still run at once, beside the
// busy workers, and no more than the maximum of workers start.
func TestWorkersNeverMakeAFunctionWait(t *testing.T) {
	const max, extra = 4, 3
	w := newWorkers(max)
	defer w.stop()
	release := make(chan struct{})
	var started, done sync.WaitGroup
	for range max + extra {
		started.Add(1)
		done.Add(1)
		w.Go(func() {
			defer done.Done()
			started.Done()
			<-release
		})
	}
	started.Wait() // every function runs while all of them block
	if n := w.live.Load(); n != max {
		t.Errorf("%d workers running, want %d", n, max)
	}
	close(release)
	done.Wait()
}

// A worker that has finished waits for the next function.
func TestWorkersKeepAFinishedWorker(t *testing.T) {
	w := newWorkers(4)
	defer w.stop()
	ran := make(chan struct{})
	w.Go(func() { ran <- struct{}{} })
	<-ran
	w.work <- func() { ran <- struct{}{} } // blocks unless a worker waits
	<-ran
	if n := w.live.Load(); n != 1 {
		t.Errorf("%d workers, want 1", n)
	}
}

// After stop, every worker ends once it finishes, and functions given
// later still run.
func TestWorkersEndAfterStop(t *testing.T) {
	w := newWorkers(4)
	release := make(chan struct{})
	w.Go(func() { <-release })
	w.stop()
	ran := make(chan struct{})
	w.Go(func() { close(ran) })
	<-ran
	close(release)
	w.wg.Wait()
	if n := w.live.Load(); n != 0 {
		t.Errorf("%d workers left after stop", n)
	}
}
