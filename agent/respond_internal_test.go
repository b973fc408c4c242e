package agent

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/protocol"
)

// A reply that cannot be sent as it is, because it cannot be encoded (a
// string field that is not UTF-8) or is larger than the server's max
// payload, is replaced by CODE_INTERNAL naming why rather than dropped, in
// both encodings.
func TestAReplyThatCannotBeSentBecomesAnInternalError(t *testing.T) {
	nc := connectFresh(t)
	s := &Service{cfg: Config{Conn: nc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	for _, tc := range []struct {
		name   string
		holder string
		want   string // in the status message
	}{
		{"not UTF-8", "\xff", "could not encode"},
		{"over the max payload", strings.Repeat("x", int(nc.MaxPayload())), "max payload"},
	} {
		for _, json := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/json=%v", tc.name, json), func(t *testing.T) {
				sub, err := nc.SubscribeSync(nc.NewInbox())
				if err != nil {
					t.Fatal(err)
				}
				s.respond(sub.Subject, json, &messages.StateReply{Held: true, Holder: tc.holder})
				msg, err := sub.NextMsg(10 * time.Second)
				if err != nil {
					t.Fatalf("no reply: %v", err)
				}
				var r messages.StateReply
				if err := protocol.Decode(msg.Data, json, &r); err != nil || r.GetStatus().GetCode() != messages.Code_CODE_INTERNAL ||
					!strings.Contains(r.GetStatus().GetMessage(), tc.want) {
					t.Fatalf("reply %q (%v), want CODE_INTERNAL saying %q", msg.Data, err, tc.want)
				}
			})
		}
	}
}
