package actors

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// workers runs short functions on goroutines that outlive them: the
// namespace actors' message loops and their store writes. A goroutine made
// afresh for each starts with a small stack, and the write path (protobuf
// encoding, the NATS client) is deep enough to grow it every time: measured
// here, a tenth of the CPU of 32 goroutines claiming went to copying
// stacks. A worker keeps the stack it grew.
//
// A function never waits for a worker: if none is idle, a new one starts
// (up to max; beyond that the function gets a plain goroutine), so a slow
// store write cannot hold anything else up. A worker idle for idleWorker
// ends, and so does every worker after stop, once it finishes what it runs.
type workers struct {
	work chan func()
	done chan struct{}
	live atomic.Int32
	max  int32
	wg   sync.WaitGroup // of the workers
}

// idleWorker is how long a worker waits for work before it ends.
const idleWorker = 10 * time.Second

// maxWorkers bounds the workers kept: enough for every write of a busy
// namespace's round to be in flight on one.
const maxWorkers = 1024

func newWorkers(max int32) *workers {
	return &workers{work: make(chan func()), done: make(chan struct{}), max: max}
}

// Go runs fn on an idle worker, else on a new one.
func (w *workers) Go(fn func()) {
	select {
	case w.work <- fn:
		return
	default:
	}
	if w.live.Add(1) > w.max {
		w.live.Add(-1)
		go fn()
		return
	}
	w.wg.Add(1)
	go w.loop(fn)
}

func (w *workers) loop(fn func()) {
	defer w.wg.Done()
	defer w.live.Add(-1)
	idle := time.NewTimer(idleWorker)
	defer idle.Stop()
	for {
		fn()
		idle.Reset(idleWorker)
		select {
		case fn = <-w.work:
		case <-idle.C:
			return
		case <-w.done:
			return
		}
	}
}

// stop ends the workers once they finish what they are running.
func (w *workers) stop() { close(w.done) }

// dispatcher runs actors' message loops on workers: Proto.Actor's default
// dispatcher starts a goroutine each time a mailbox that was empty gets a
// message.
type dispatcher struct {
	workers    *workers
	throughput int
}

var _ actor.Dispatcher = dispatcher{}

func (d dispatcher) Schedule(fn func()) { d.workers.Go(fn) }
func (d dispatcher) Throughput() int    { return d.throughput }

// mailboxThroughput is how many messages an actor takes in a row before it
// yields its goroutine: Proto.Actor's default.
const mailboxThroughput = 300
