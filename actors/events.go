package actors

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// publishExpired announces that a lease was expired or released.
func (a *namespaceActor) publishExpired(leaseName, holder string, revision uint64) {
	if subject := a.expiredSubject + natskv.EscapeName(leaseName); a.heard(subject) {
		a.publish(protocol.EventExpired, subject, &messages.ExpiredEvent{
			Namespace: a.name, Lease: leaseName, Holder: holder, Revision: revision,
		})
	}
}

// publishClaimed announces that a lease has a new holder.
func (a *namespaceActor) publishClaimed(leaseName, holder string, revision uint64, d time.Duration) {
	if subject := a.claimedSubject + natskv.EscapeName(leaseName); a.heard(subject) {
		a.publish(protocol.EventClaimed, subject, &messages.ClaimedEvent{
			Namespace: a.name, Lease: leaseName, Holder: holder, Revision: revision,
			Duration: durationpb.New(d),
		})
	}
}

// heard reports whether an event on subject would reach a subscriber, as
// far as Config.Interest can tell; without it, every event is sent. An
// event built and sent to no one is work for nothing on both sides.
func (a *namespaceActor) heard(subject string) bool {
	return a.rt.cfg.Interest == nil || a.rt.cfg.Interest(subject)
}

// publish sends an event without waiting: nats.go buffers it, and a lost
// event costs waiters at most one poll interval (they re-ask).
func (a *namespaceActor) publish(kind, subject string, m proto.Message) {
	// Publish copies the payload, so one buffer serves every event.
	var err error
	a.eventBuf, err = proto.MarshalOptions{}.MarshalAppend(a.eventBuf[:0], m)
	if err == nil {
		err = a.rt.cfg.Conn.Publish(subject, a.eventBuf)
	}
	a.rt.cfg.Metrics.Event(kind, err)
	if err != nil {
		a.log.Warn("publish event failed", "subject", subject, "error", err)
	}
}
