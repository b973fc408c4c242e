package agent

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/protocol"
)

// A reply that cannot be encoded (a string field that is not UTF-8) is
// replaced by CODE_INTERNAL rather than dropped, in both encodings.
func TestAnUnencodableReplyBecomesAnInternalError(t *testing.T) {
	nc := connectFresh(t)
	s := &Service{cfg: Config{Conn: nc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	for _, json := range []bool{false, true} {
		sub, err := nc.SubscribeSync(nc.NewInbox())
		if err != nil {
			t.Fatal(err)
		}
		s.respond(sub.Subject, json, &messages.StateReply{Held: true, Holder: "\xff"})
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("json %v: no reply: %v", json, err)
		}
		var r messages.StateReply
		if err := protocol.Decode(msg.Data, json, &r); err != nil || r.GetStatus().GetCode() != messages.Code_CODE_INTERNAL {
			t.Fatalf("json %v: reply %q (%v), want CODE_INTERNAL", json, msg.Data, err)
		}
	}
}

// A reply larger than the server's max payload cannot be published: it is
// replaced by CODE_INTERNAL rather than dropped, in both encodings.
func TestAReplyTooLargeToSendBecomesAnInternalError(t *testing.T) {
	nc := connectFresh(t)
	s := &Service{cfg: Config{Conn: nc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	for _, json := range []bool{false, true} {
		sub, err := nc.SubscribeSync(nc.NewInbox())
		if err != nil {
			t.Fatal(err)
		}
		s.respond(sub.Subject, json, &messages.StateReply{Held: true, Holder: strings.Repeat("x", int(nc.MaxPayload()))})
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("json %v: no reply: %v", json, err)
		}
		var r messages.StateReply
		if err := protocol.Decode(msg.Data, json, &r); err != nil || r.GetStatus().GetCode() != messages.Code_CODE_INTERNAL ||
			!strings.Contains(r.GetStatus().GetMessage(), "max payload") {
			t.Fatalf("json %v: reply %q (%v), want CODE_INTERNAL naming the max payload", json, msg.Data, err)
		}
	}
}
