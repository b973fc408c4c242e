package actors

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease/clock"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// Errors of the Manager, beside those of package lease.
var (
	// ErrStopped is returned by calls made to, or pending in, a Manager
	// that has stopped.
	ErrStopped = errors.New("lease manager stopped")

	// ErrUnavailable means the request could not be served now (the store
	// did not answer, or the namespace's actor restarted); it may be
	// retried, and allows no inference about who holds the lease. It is
	// protocol.ErrUnavailable, so callers test for one error whether they
	// use a Manager or a client.
	ErrUnavailable = protocol.ErrUnavailable

	// ErrInvalidArgument means a request named something invalid; nothing
	// changed. It is protocol.ErrInvalidArgument.
	ErrInvalidArgument = protocol.ErrInvalidArgument
)

// runtime is what every actor of a Manager shares.
type runtime struct {
	cfg    Config
	bucket *natskv.Bucket
	ctx    context.Context // cancelled by Stop: aborts store operations
	system *actor.ActorSystem
	// workers run the namespace actors and their store writes.
	workers *workers
	// namespaces maps each namespace with a running actor to its
	// *namespaceRef, so that requests go straight to it. Only the manager
	// actor writes it.
	namespaces sync.Map
	// served counts the namespaces with a running actor (the manager
	// actor's children), for Namespace.Full.
	served atomic.Int64
	// mayWrite, if set, says whether a namespace's actor may still write
	// to the store (SetWriteGuard).
	mayWrite atomic.Pointer[func(namespace string) bool]
}

// writable reports whether the actor of namespace may write to the store.
func (rt *runtime) writable(namespace string) bool {
	f := rt.mayWrite.Load()
	return f == nil || (*f)(namespace)
}

func (rt *runtime) newStore(namespace string) (store, error) {
	if h := rt.cfg.hooks.newStore; h != nil {
		return h(namespace, rt.bucket)
	}
	return natskv.NewClient(natskv.Config{
		Bucket:         rt.bucket,
		Namespace:      namespace,
		Clock:          rt.cfg.Clock,
		WriterID:       rt.cfg.WriterID,
		ClockDriftRate: rt.cfg.ClockDriftRate,
		Timeout:        rt.cfg.WriteTimeout,
	})
}

// runWrite performs a store write. Its time limit is the JetStream
// context's async publish timeout (WriteTimeout), which costs no timer per
// write.
func (rt *runtime) runWrite(w *natskv.Write) {
	start := time.Now()
	if h := rt.cfg.hooks.runWrite; h != nil {
		h(rt.ctx, w)
	} else {
		w.Run(rt.ctx)
	}
	rt.cfg.Metrics.StoreWrite(time.Since(start))
}

// runWrites performs a round of store writes of one namespace: alone if
// there is one, as atomic batches if there are at least MinBatch, otherwise
// concurrently, each alone. It reports how they were sent.
func (rt *runtime) runWrites(namespace string, ws []*natskv.Write) {
	var stats natskv.BatchStats
	switch {
	case len(ws) == 1:
		rt.runWrite(ws[0])
		stats.Singles = 1
	case rt.cfg.MinBatch > 0 && len(ws) >= rt.cfg.MinBatch:
		start := time.Now()
		if h := rt.cfg.hooks.runBatch; h != nil {
			stats = h(rt.ctx, ws)
		} else {
			stats = rt.bucket.RunBatch(rt.ctx, ws)
		}
		d := time.Since(start)
		for range ws {
			rt.cfg.Metrics.StoreWrite(d)
		}
	default:
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Add(1)
			rt.workers.Go(func() {
				defer wg.Done()
				rt.runWrite(w)
			})
		}
		wg.Wait()
		stats.Singles = len(ws)
	}
	if h := rt.cfg.hooks.round; h != nil {
		h(namespace, len(ws), stats)
	}
}

// Manager runs the lease actors of one bucket: one actor per namespace.
type Manager struct {
	rt       *runtime
	pid      *actor.PID
	cancel   context.CancelFunc
	stopping chan struct{} // closed when Stop begins: pending calls fail
	pending  *pendingCalls // the Func calls not yet answered
	stopped  chan struct{} // closed when every actor has stopped
	down     chan struct{} // closed when Stop has released everything
	stopOnce sync.Once
	// js is the JetStream context of the store writes. Its async publisher
	// subscribes on Config.Conn, which outlives the Manager: Stop cleans
	// it up.
	js jetstream.JetStream
}

// New opens (or creates) the bucket and starts a Manager.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	js, err := jetstream.New(cfg.Conn, jetstream.WithPublishAsyncTimeout(cfg.WriteTimeout))
	if err != nil {
		return nil, fmt.Errorf("actors: jetstream: %w", err)
	}
	bucket, err := natskv.OpenBucket(ctx, natskv.BucketConfig{
		JetStream: js, Name: cfg.Bucket, Replicas: cfg.Replicas, Storage: cfg.Storage,
		DeleteMarkerTTL: cfg.DeleteMarkerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("actors: %w", err)
	}
	// Proto.Actor logs to stderr in colour unless given a logger; it gets
	// ours, from warnings up.
	actorLog := slog.New(minLevel{cfg.Logger.Handler(), slog.LevelWarn}).With("lib", "protoactor")
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return actorLog }))
	// A request sent to a namespace actor that has just stopped would
	// otherwise wait for nothing: fail it.
	system.EventStream.Subscribe(func(e any) {
		if dl, ok := e.(*actor.DeadLetterEvent); ok {
			failRequest(dl.Message, fmt.Errorf("%w: namespace actor %s is gone", ErrUnavailable, dl.PID.GetId()))
		}
	})
	runCtx, cancel := context.WithCancel(context.Background())
	rt := &runtime{cfg: cfg, bucket: bucket, ctx: runCtx, system: system, workers: newWorkers(maxWorkers)}
	m := &Manager{
		rt:       rt,
		cancel:   cancel,
		stopping: make(chan struct{}),
		stopped:  make(chan struct{}),
		down:     make(chan struct{}),
		js:       js,
		pending:  newPendingCalls(cmp.Or(cfg.hooks.sweepEvery, sweepEvery)),
	}
	// The manager actor supervises the namespace actors itself
	// (managerActor.HandleFailure).
	props := actor.PropsFromProducer(func() actor.Actor { return newManagerActor(rt, m.stopped) })
	m.pid, err = system.Root.SpawnNamed(props, "leases")
	if err != nil {
		cancel()
		system.Shutdown()
		rt.workers.stop()
		return nil, fmt.Errorf("actors: start manager: %w", err)
	}
	return m, nil
}

// Stop stops every actor. Calls pending or made later fail with ErrStopped;
// writes in flight are abandoned (their outcome is for the store to tell).
// It returns when every actor has stopped and what the Manager added to
// Config.Conn (the subscription that receives write acknowledgements) is
// gone, or with ctx's error; the Manager then finishes stopping on its own.
// Stop may be called again, and from several goroutines at once.
func (m *Manager) Stop(ctx context.Context) error {
	m.stopOnce.Do(func() {
		close(m.stopping)
		m.pending.stop(ErrStopped)
		m.cancel()
		m.rt.system.Root.Poison(m.pid)
		// Not on the caller's goroutine: a Stop whose ctx ends first
		// must not leave the rest undone.
		go func() {
			<-m.stopped
			m.rt.system.Shutdown()
			m.rt.workers.stop()
			m.js.CleanupPublisher()
			close(m.down)
		}()
	})
	select {
	case <-m.down:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("actors: stop: %w", ctx.Err())
	}
}

// SetWriteGuard makes the namespace actors ask mayWrite before each store
// write, from their own goroutines, and not write while it reports false
// for their namespace: a claim or release then fails with ErrUnavailable,
// and an expiry waits for the next timer.
//
// It is for a caller that shares namespaces with other Managers, each
// serving a namespace only while it owns it (package agent). An owner that
// has lost a namespace (say, it was paused for longer than its ownership)
// answers no one, but its actor could still write: expire a lease that the
// new owner has extended without a write, and announce it. The guard makes
// that a check just before the write instead of a window until the actor
// is stopped.
func (m *Manager) SetWriteGuard(mayWrite func(namespace string) bool) {
	m.rt.mayWrite.Store(&mayWrite)
}

// Clock returns the clock the Manager decides expiry on; lease.Info.Expiry
// values it reports are readings of it.
func (m *Manager) Clock() clock.Clock { return m.rt.cfg.Clock }

// Bucket returns the bucket the Manager keeps its leases in.
func (m *Manager) Bucket() *natskv.Bucket { return m.rt.bucket }

// Serving reports whether a namespace's actor is running: it has been used
// and has not since been idle for IdleTimeout or unloaded.
func (m *Manager) Serving(namespace string) bool {
	_, ok := m.rt.namespaces.Load(namespace)
	return ok
}

// Unload stops a namespace's actor, if it runs, and forgets what it knew:
// the next call for the namespace starts a new actor, which loads the
// namespace from the store and treats every lease in it by the clock rule,
// as if another agent had written it. Calls already in the actor's mailbox
// are answered first; those still waiting for a write then fail with
// ErrUnavailable. Unload returns once calls made after it can no longer
// reach the old actor, without waiting for that actor to stop; it returns
// ctx's error if ctx ends first, and ErrStopped if the Manager stops.
//
// An agent that shares a bucket with others unloads a namespace when it
// stops owning it, and before it serves it again, so that it never answers
// from state another owner may have changed.
func (m *Manager) Unload(ctx context.Context, namespace string) error {
	done := make(chan struct{})
	select {
	case <-m.stopping:
		return ErrStopped
	default:
	}
	m.rt.system.Root.Send(m.pid, &unload{namespace: namespace, done: done})
	_, err := await(ctx, m, done)
	return err
}

// Namespace returns the leases of one namespace. Its methods report an
// invalid namespace name; the namespace's actor starts on first use.
func (m *Manager) Namespace(name string) *Namespace {
	return &Namespace{m: m, name: name}
}

// send hands msg to the namespace's actor, unless the Manager is stopping.
func (m *Manager) send(namespace string, msg any) error {
	select {
	case <-m.stopping:
		return ErrStopped
	default:
	}
	if ref, ok := m.rt.namespaces.Load(namespace); ok && m.sendDirect(namespace, ref.(*namespaceRef), msg) {
		return nil
	}
	m.rt.system.Root.Send(m.pid, &toNamespace{namespace: namespace, msg: msg})
	return nil
}

// sendContext is send for a caller that waits with ctx: if ctx has ended
// it sends nothing and returns ctx's error, since the caller could not
// tell whether a request it gave up on at once took effect.
func (m *Manager) sendContext(ctx context.Context, namespace string, msg any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return m.send(namespace, msg)
}

// sendDirect sends msg straight to a namespace's actor, unless the manager
// actor has retired it (it is stopping): then it reports false, and the
// request must go through the manager actor. See namespaceRef.
func (m *Manager) sendDirect(namespace string, ref *namespaceRef, msg any) bool {
	hook := m.rt.cfg.hooks.sending
	if hook != nil {
		hook(namespace, false)
	}
	ref.senders.Add(1)
	defer ref.senders.Add(-1)
	if ref.retired.Load() {
		return false
	}
	if hook != nil {
		hook(namespace, true)
	}
	m.rt.system.Root.Send(ref.pid, msg)
	return true
}

// await waits for a reply, the caller's context, or Stop.
func await[T any](ctx context.Context, m *Manager, reply chan T) (T, error) {
	var zero T
	select {
	case v := <-reply:
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-m.stopping:
		return zero, ErrStopped
	}
}

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}
