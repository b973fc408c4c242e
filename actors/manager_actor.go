package actors

import (
	"fmt"
	goruntime "runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// toNamespace is a request for the actor of one namespace.
type toNamespace struct {
	namespace string
	msg       any
}

// idle says a namespace actor has had nothing to do for IdleTimeout.
type idle struct {
	namespace string
	who       *actor.PID
}

// unload asks for a namespace's actor to be stopped and its store
// forgotten (Manager.Unload); done is closed once it is.
type unload struct {
	namespace string
	done      chan struct{}
}

// namespaceRef is how requests reach a namespace's actor straight from
// Manager.send (runtime.namespaces), and how the manager actor makes sure
// none is lost when it stops that actor: Proto.Actor drops, unanswered, a
// message that lands in a mailbox behind the PoisonPill.
//
// A sender counts itself in senders, then sends only if the ref is not
// retired, then counts itself out: it is counted for one Send. The manager
// retires the ref, waits for senders to be 0, and only then sends the
// PoisonPill. Go's atomics are sequentially consistent, so a send that saw
// the ref live is in the mailbox ahead of the PoisonPill, and a sender that
// comes later sees it retired and goes through the manager actor, to the
// namespace's next actor.
type namespaceRef struct {
	pid     *actor.PID
	retired atomic.Bool
	senders atomic.Int32
}

// managerActor creates one namespace actor per namespace on first use and
// supervises them: a namespace actor that panics is restarted (its store,
// and the cache in it, survive), up to maxRestarts times a restartWindow, then
// stopped; its next request starts it afresh. A namespace actor that is
// idle for IdleTimeout is stopped the same way. At most MaxNamespaces run.
type managerActor struct {
	rt       *runtime
	children map[string]*namespaceRef
	shared   map[string]*namespaceShared
	stopped  chan struct{}
	spawned  uint64 // makes each namespace actor's name unique
}

// Restart limits of a namespace actor: more panics than this within the
// window stop it (HandleFailure).
const (
	maxRestarts   = 10
	restartWindow = time.Minute
)

func newManagerActor(rt *runtime, stopped chan struct{}) *managerActor {
	return &managerActor{
		rt:       rt,
		children: make(map[string]*namespaceRef),
		shared:   make(map[string]*namespaceShared),
		stopped:  stopped,
	}
}

func (m *managerActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *toNamespace:
		ref, err := m.child(ctx, msg.namespace)
		if err != nil {
			failRequest(msg.msg, err)
			return
		}
		ctx.Send(ref.pid, msg.msg)
	case *idle:
		// Forget it first: requests from now on start a new actor, while
		// the old one answers what is already in its mailbox and stops.
		if ref, ok := m.children[msg.namespace]; ok && ref.pid.Equal(msg.who) {
			m.retire(msg.namespace, ref, nil)
			m.rt.cfg.Logger.Info("stopped idle namespace", "namespace", msg.namespace)
			if h := m.rt.cfg.hooks.passivated; h != nil {
				h(msg.namespace)
			}
		}
	case *unload:
		if ref, ok := m.children[msg.namespace]; ok {
			m.retire(msg.namespace, ref, &unloading{
				err: fmt.Errorf("%w: namespace %q is no longer served here; try again", ErrUnavailable, msg.namespace),
			})
			m.rt.cfg.Logger.Info("stopped serving namespace", "namespace", msg.namespace)
		}
		close(msg.done)
	case *actor.Terminated:
		for name, ref := range m.children {
			if ref.pid.Equal(msg.Who) {
				m.forget(name, ref) // not retired: the manager is stopping
			}
		}
	case *actor.Stopped:
		close(m.stopped)
	}
}

// HandleFailure supervises the namespace actors: the manager actor is
// their SupervisorStrategy. A namespace actor that panics is restarted;
// one that has panicked more than maxRestarts times within restartWindow
// is restarted once more and retired, so that it answers what is in its
// mailbox before it stops (Proto.Actor would drop the mailbox of an actor
// stopped at once). A retired one is always restarted: only the requests
// ahead of its PoisonPill are left, and each can crash it once.
func (m *managerActor) HandleFailure(_ *actor.ActorSystem, supervisor actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, _, _ any) {
	supervisor.RestartChildren(child)
	rs.Fail()
	if rs.NumberOfFailures(restartWindow) <= maxRestarts {
		return
	}
	rs.Reset()
	for name, ref := range m.children {
		if ref.pid.Equal(child) {
			m.retire(name, ref, &unloading{
				err: fmt.Errorf("%w: namespace %q stopped after more than %d failures in %v; try again",
					ErrUnavailable, name, maxRestarts, restartWindow),
			})
			m.rt.cfg.Logger.Error("stopped namespace failing too often", "namespace", name)
		}
	}
}

// retire forgets a namespace's actor and stops it: it marks its ref
// retired, so that no new request reaches it, and once the sends that
// found it live are in its mailbox, sends it last (if not nil) and the
// PoisonPill. It waits for them off the manager's goroutine, unless none
// is in progress (the usual case); each lasts one Send.
func (m *managerActor) retire(namespace string, ref *namespaceRef, last any) {
	m.forget(namespace, ref)
	ref.retired.Store(true)
	stop := func() {
		root := m.rt.system.Root
		if last != nil {
			root.Send(ref.pid, last)
		}
		root.Poison(ref.pid)
	}
	if ref.senders.Load() == 0 {
		stop()
		return
	}
	go func() {
		for ref.senders.Load() != 0 {
			goruntime.Gosched()
		}
		stop()
	}()
}

// forget drops a namespace's actor and its store.
func (m *managerActor) forget(namespace string, ref *namespaceRef) {
	if _, ok := m.children[namespace]; ok {
		m.rt.served.Add(-1)
	}
	delete(m.children, namespace)
	delete(m.shared, namespace)
	m.rt.namespaces.CompareAndDelete(namespace, ref)
}

// child returns the actor of a namespace, starting it if it has none.
func (m *managerActor) child(ctx actor.Context, namespace string) (*namespaceRef, error) {
	if ref, ok := m.children[namespace]; ok {
		return ref, nil
	}
	if len(m.children) >= m.rt.cfg.MaxNamespaces {
		return nil, tooManyNamespaces(len(m.children), namespace)
	}
	shared, ok := m.shared[namespace]
	if !ok {
		st, err := m.rt.newStore(namespace)
		if err != nil {
			return nil, fmt.Errorf("%w: namespace %q: %w", ErrInvalidArgument, namespace, err)
		}
		shared = &namespaceShared{name: namespace, store: st}
		m.shared[namespace] = shared
	}
	props := actor.PropsFromProducer(func() actor.Actor { return newNamespaceActor(m.rt, shared) },
		actor.WithDispatcher(dispatcher{workers: m.rt.workers, throughput: mailboxThroughput}))
	m.spawned++
	pid, err := ctx.SpawnNamed(props, natskv.EscapeName(namespace)+"."+strconv.FormatUint(m.spawned, 10))
	if err != nil {
		return nil, fmt.Errorf("%w: start namespace %q: %w", ErrUnavailable, namespace, err)
	}
	ref := &namespaceRef{pid: pid}
	m.children[namespace] = ref
	m.rt.served.Add(1)
	m.rt.namespaces.Store(namespace, ref)
	m.rt.cfg.Metrics.OwnerChange(namespace)
	m.rt.cfg.Logger.Info("serving namespace", "namespace", namespace)
	return ref, nil
}

// tooManyNamespaces is the error for a namespace that cannot be served
// because served namespaces are served already: a refusal before anything
// was done (protocol.ErrRefused).
func tooManyNamespaces(served int, namespace string) error {
	return protocol.Refused(fmt.Errorf("%w: %d namespaces are served, the most allowed (MaxNamespaces); %q must wait until one is idle",
		ErrUnavailable, served, namespace))
}
