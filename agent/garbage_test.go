package agent_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/leaseagent/lease/internal/testenv"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/protocol"
)

// Random bytes, every truncation of a valid request, and a body as large as
// NATS allows: each gets a reply that is not an internal error, and the
// agent goes on serving.
func TestGarbageOverTheWire(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	rng := rand.New(rand.NewPCG(1, 2))
	valid := claimBody(t, "lease-name", "holder/0", time.Minute)

	var bodies [][]byte
	for range 200 {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		bodies = append(bodies, b)
	}
	for i := range valid {
		bodies = append(bodies, valid[:i])
	}
	huge := make([]byte, nc.MaxPayload()-1024) // room for the subject and headers
	for i := range huge {
		huge[i] = byte(rng.UintN(256))
	}
	bodies = append(bodies, huge)

	for i, body := range bodies {
		for _, op := range protocol.Operations {
			msg := request(t, nc, "lease."+op+".garbage", body, nil)
			if st := status(t, msg); st.GetCode() == messages.Code_CODE_INTERNAL || st.GetCode() == messages.Code_CODE_UNSPECIFIED {
				t.Fatalf("body %d (%d bytes) to %s: %v %q", i, len(body), op, st.GetCode(), st.GetMessage())
			}
		}
	}
	if st := status(t, request(t, nc, "lease.claim.garbage", valid, nil)); st.GetCode() != messages.Code_CODE_OK {
		t.Fatalf("a valid claim after the garbage: %v %q", st.GetCode(), st.GetMessage())
	}
}
