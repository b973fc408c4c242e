package actors

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/leaseagent/lease/natskv"
)

// toNamespace is a request for the actor of one namespace.
type toNamespace struct {
	namespace string
	msg       any
}

// managerActor creates one namespace actor per namespace on first use and
// supervises them: a namespace actor that panics is restarted (its store,
// and the cache in it, survive), up to MaxRestarts times a minute, then
// stopped; its next request starts it afresh.
type managerActor struct {
	rt       *runtime
	children map[string]*actor.PID
	shared   map[string]*namespaceShared
	stopped  chan struct{}
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
	case *actor.Terminated:
		for name, pid := range m.children {
			if pid.Equal(msg.Who) {
				delete(m.children, name)
				m.rt.namespaces.CompareAndDelete(name, pid)
			}
		}
	case *actor.Stopped:
		close(m.stopped)
	}
}

// child returns the actor of a namespace, starting it if it has none.
func (m *managerActor) child(ctx actor.Context, namespace string) (*actor.PID, error) {
	if pid, ok := m.children[namespace]; ok {
		return pid, nil
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
	props := actor.PropsFromProducer(func() actor.Actor { return newNamespaceActor(m.rt, shared) })
	pid, err := ctx.SpawnNamed(props, natskv.EscapeName(namespace))
	if err != nil {
		return nil, fmt.Errorf("%w: start namespace %q: %w", ErrUnavailable, namespace, err)
	}
	m.children[namespace] = pid
	m.rt.namespaces.Store(namespace, pid)
	m.rt.cfg.Metrics.OwnerChange(namespace)
	m.rt.cfg.Logger.Info("serving namespace", "namespace", namespace)
	return pid, nil
}
