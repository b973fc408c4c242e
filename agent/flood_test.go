package agent_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/internal/testenv"
	"github.com/leaseagent/lease/messages"
)

// Requests naming ever new namespaces cannot exhaust the agent: past
// MaxNamespaces they get a clear "unavailable", refused before anything
// was done, and the namespaces already
// served go on being served.
func TestFloodOfNamespacesIsBounded(t *testing.T) {
	e := testenv.Start(t, func(cfg *actors.Config) { cfg.MaxNamespaces = 5 })
	nc := e.Connect(t)
	served, refused := 0, 0
	for i := range 50 {
		st := status(t, request(t, nc, fmt.Sprintf("lease.claim.flood-%d", i), claimBody(t, "l", "h", time.Minute), nil))
		switch {
		case st.GetCode() == messages.Code_CODE_OK:
			served++
		case st.GetCode() == messages.Code_CODE_UNAVAILABLE && st.GetRefused() && strings.Contains(st.GetMessage(), "MaxNamespaces"):
			refused++
		default:
			t.Fatalf("namespace %d: %v %q", i, st.GetCode(), st.GetMessage())
		}
	}
	if served != 5 || refused != 45 {
		t.Fatalf("served %d, refused %d; want 5 and 45", served, refused)
	}
	if st := status(t, request(t, nc, "lease.claim.flood-0", claimBody(t, "l", "h", time.Minute), nil)); st.GetCode() != messages.Code_CODE_OK {
		t.Fatalf("a namespace already served, after the flood: %v %q", st.GetCode(), st.GetMessage())
	}
}
