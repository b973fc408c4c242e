package actors

import (
	"fmt"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/leaseagent/lease/natskv"
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

// managerActor creates one namespace actor per namespace on first use and
// supervises them: a namespace actor that panics is restarted (its store,
// and the cache in it, survive), up to MaxRestarts times a minute, then
// stopped; its next request starts it afresh. A namespace actor that is
// idle for IdleTimeout is stopped the same way. At most MaxNamespaces run.
type managerActor struct {
	rt       *runtime
	children map[string]*actor.PID
	shared   map[string]*namespaceShared
	stopped  chan struct{}
	spawned  uint64 // makes each namespace actor's name unique
}

// Restart limits of a namespace actor: more panics than this within the
// window stop it.
const (
	maxRestarts   = 10
	restartWindow = time.Minute
)

func newManagerActor(rt *runtime, stopped chan struct{}) *managerActor {
	return &managerActor{
		rt:       rt,
		children: make(map[string]*actor.PID),
		shared:   make(map[string]*namespaceShared),
		stopped:  stopped,
	}
}

func (m *managerActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *toNamespace:
		pid, err := m.child(ctx, msg.namespace)
		if err != nil {
			failRequest(msg.msg, err)
			return
		}
		ctx.Send(pid, msg.msg)
	case *idle:
		// Forget it first: requests from now on start a new actor, while
		// the old one answers what is already in its mailbox and stops.
		if pid, ok := m.children[msg.namespace]; ok && pid.Equal(msg.who) {
			m.forget(msg.namespace, pid)
			ctx.Poison(pid)
			m.rt.cfg.Logger.Info("stopped idle namespace", "namespace", msg.namespace)
			if h := m.rt.cfg.hooks.passivated; h != nil {
				h(msg.namespace)
			}
		}
	case *unload:
		if pid, ok := m.children[msg.namespace]; ok {
			m.forget(msg.namespace, pid)
			ctx.Send(pid, &unloading{})
			ctx.Poison(pid)
			m.rt.cfg.Logger.Info("stopped serving namespace", "namespace", msg.namespace)
		}
		close(msg.done)
	case *actor.Terminated:
		for name, pid := range m.children {
			if pid.Equal(msg.Who) {
				m.forget(name, pid) // stopped after too many restarts
			}
		}
	case *actor.Stopped:
		close(m.stopped)
	}
}

// forget drops a namespace's actor and its store.
func (m *managerActor) forget(namespace string, pid *actor.PID) {
	delete(m.children, namespace)
	delete(m.shared, namespace)
	m.rt.namespaces.CompareAndDelete(namespace, pid)
}

// child returns the actor of a namespace, starting it if it has none.
func (m *managerActor) child(ctx actor.Context, namespace string) (*actor.PID, error) {
	if pid, ok := m.children[namespace]; ok {
		return pid, nil
	}
	if len(m.children) >= m.rt.cfg.MaxNamespaces {
		return nil, fmt.Errorf("%w: %d namespaces are served, the most allowed (MaxNamespaces); %q must wait until one is idle",
			ErrUnavailable, len(m.children), namespace)
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
	m.children[namespace] = pid
	m.rt.namespaces.Store(namespace, pid)
	m.rt.cfg.Metrics.OwnerChange(namespace)
	m.rt.cfg.Logger.Info("serving namespace", "namespace", namespace)
	return pid, nil
}
