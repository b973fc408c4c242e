package protocol_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/protocol"
)

// FuzzDecode feeds arbitrary bodies, in both encodings, to the decoder of
// every request the agent serves and of both events: it must never panic,
// and what it accepts must encode and decode to the same message.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"lease":"l","holder":"h","duration":"60s"}`), true)
	f.Add([]byte(`{"lease":"l","colour":"red"}`), true)
	f.Add([]byte{0x0a, 0x01, 'l', 0x12, 0x01, 'h', 0x1a, 0x02, 0x08, 0x3c}, false)
	f.Add([]byte{0xf8, 0x01, 0x01}, false)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, data []byte, json bool) {
		for _, m := range []proto.Message{
			&messages.ClaimRequest{}, &messages.CheckRequest{}, &messages.ListRequest{},
			&messages.ReleaseRequest{}, &messages.StateRequest{},
			&messages.ExpiredEvent{}, &messages.ClaimedEvent{},
		} {
			if err := protocol.Decode(data, json, m); err != nil {
				continue
			}
			enc, err := protocol.Encode(m, json)
			if err != nil {
				t.Fatalf("%T: re-encode of an accepted body: %v", m, err)
			}
			again := m.ProtoReflect().New().Interface()
			if err := protocol.Decode(enc, json, again); err != nil || !proto.Equal(m, again) {
				t.Fatalf("%T: round trip changed %v into %v (%v)", m, m, again, err)
			}
		}
	})
}
