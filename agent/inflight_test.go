package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/internal/testenv"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/metrics"
)

// bounded is an agent under test whose Ghosted namespaces' requests stay
// in flight until the test answers them (testenv.Options.Ghosted).
type bounded struct {
	*testenv.Env
	logs   *testenv.SyncBuffer
	metric *metrics.Metrics
}

// startBounded starts an agent configured by edit, with its logs and
// metrics, beside a ghost owning ghostly.
func startBounded(t *testing.T, edit func(*agent.Config), ghostly ...string) *bounded {
	t.Helper()
	b := &bounded{logs: &testenv.SyncBuffer{}, metric: metrics.New()}
	b.Env = testenv.StartWith(t, testenv.Options{
		Ghosted: ghostly,
		Agent: func(c *agent.Config) {
			c.Logger, c.Metrics = slog.New(slog.NewTextHandler(b.logs, nil)), b.metric
			edit(c)
		},
	})
	return b
}

// refused reports whether a status is the refusal for load that names
// bound, marked as refused before anything was done.
func refused(st *messages.Status, bound string) bool {
	return st.GetCode() == messages.Code_CODE_UNAVAILABLE && st.GetRefused() && strings.Contains(st.GetMessage(), bound) &&
		strings.Contains(st.GetMessage(), "retry")
}

// fill holds bound requests, half in namespace g1 and half in g2 (ghost
// owned), so that the agent is at its bound and neither namespace at its
// own.
func (b *bounded) fill(t *testing.T, nc *nats.Conn, bound int) []*testenv.Held {
	t.Helper()
	claim := claimBody(t, "l", "h", time.Minute)
	return []*testenv.Held{b.Hold(t, nc, bound/2, "lease.claim.g1", claim), b.Hold(t, nc, bound-bound/2, "lease.claim.g2", claim)}
}

func TestRequestsBeyondTheAgentsBoundAreRefusedAtOnce(t *testing.T) {
	const bound = 4
	b := startBounded(t, func(c *agent.Config) { c.MaxRequestsInflight = bound }, "g1", "g2")
	nc := b.Connect(t)
	held := b.fill(t, nc, bound)
	// The agent is full: a request for any namespace is refused, at once
	// (patience is far beyond what a refusal takes, but a request held
	// like the others would wait for ever).
	for _, subject := range []string{"lease.claim.g1", "lease.claim.other", "lease.list.other"} {
		if st := status(t, request(t, nc, subject, claimOrList(t, subject), nil)); !refused(st, "MaxRequestsInflight") {
			t.Fatalf("%s beyond the bound: %v %q, want UNAVAILABLE naming MaxRequestsInflight", subject, st.GetCode(), st.GetMessage())
		}
	}
	// The requests within the bound succeed.
	for _, h := range held {
		h.Answer(t)
	}
}

// Once the requests in flight are answered, the whole bound is free
// again: as many can be in flight as before, and no more.
func TestTheAgentsBoundIsFreedAsRequestsAreAnswered(t *testing.T) {
	const bound = 4
	b := startBounded(t, func(c *agent.Config) { c.MaxRequestsInflight = bound }, "g1", "g2")
	nc := b.Connect(t)
	claim := claimBody(t, "l", "h", time.Minute)
	for round := range 3 {
		held := b.fill(t, nc, bound)
		if st := status(t, request(t, nc, "lease.claim.other", claim, nil)); !refused(st, "MaxRequestsInflight") {
			t.Fatalf("round %d: a request beyond the bound: %v %q, want refused", round, st.GetCode(), st.GetMessage())
		}
		for _, h := range held {
			h.Answer(t)
		}
	}
}

// A namespace at its own bound is refused, and the agent goes on serving
// the others: one namespace cannot take the agent's whole bound.
func TestANamespaceAtItsBoundLeavesTheOthersServed(t *testing.T) {
	b := startBounded(t, func(c *agent.Config) {
		c.MaxRequestsInflight = 8
		c.MaxNamespaceRequestsInflight = 4
	}, "g")
	nc := b.Connect(t)
	claim := claimBody(t, "l", "h", time.Minute)
	h := b.Hold(t, nc, 4, "lease.claim.g", claim)
	flood := testenv.Send(t, nc, 20, "lease.claim.g", claim)
	served := testenv.Send(t, nc, 4, "lease.claim.other", claim)
	for range 20 {
		if st := <-flood; !refused(st, "MaxNamespaceRequestsInflight") || !strings.Contains(st.GetMessage(), `"g"`) {
			t.Fatalf("claim of g beyond its bound: %v %q, want UNAVAILABLE naming g and MaxNamespaceRequestsInflight", st.GetCode(), st.GetMessage())
		}
	}
	for range 4 {
		if st := <-served; st.GetCode() != messages.Code_CODE_OK {
			t.Fatalf("claim of another namespace while g is at its bound: %v %q", st.GetCode(), st.GetMessage())
		}
	}
	h.Answer(t)
}

// A list weighs an eighth of its namespace's bound: with a bound of 16,
// seven lists and two claims fill it.
func TestAListCountsAsAnEighthOfItsNamespacesBound(t *testing.T) {
	b := startBounded(t, func(c *agent.Config) { c.MaxNamespaceRequestsInflight = 16 }, "g")
	nc := b.Connect(t)
	list := marshal(t, &messages.ListRequest{})
	claim := claimBody(t, "l", "h", time.Minute)
	lists := b.Hold(t, nc, 7, "lease.list.g", list)
	claims := b.Hold(t, nc, 2, "lease.claim.g", claim)
	for _, r := range []struct {
		subject string
		body    []byte
	}{{"lease.list.g", list}, {"lease.claim.g", claim}} {
		if st := status(t, request(t, nc, r.subject, r.body, nil)); !refused(st, "a list counting as 2") {
			t.Fatalf("%s with seven lists and two claims in flight: %v %q, want refused", r.subject, st.GetCode(), st.GetMessage())
		}
	}
	lists.Answer(t)
	claims.Answer(t)
}

// A flood of lists on one namespace, from clients that send again as soon
// as they are answered (refused or not), leaves another namespace served:
// every check there succeeds while the flood runs.
func TestAFloodOfListsLeavesOtherNamespacesServed(t *testing.T) {
	b := startBounded(t, func(c *agent.Config) {
		c.MaxRequestsInflight = 64
		c.MaxNamespaceRequestsInflight = 16
	})
	nc := b.Connect(t)
	if st := status(t, request(t, nc, "lease.claim.other", claimBody(t, "l", "h", time.Hour), nil)); st.GetCode() != messages.Code_CODE_OK {
		t.Fatalf("claim: %v %q", st.GetCode(), st.GetMessage())
	}
	for i := range 300 {
		if st := status(t, request(t, nc, "lease.claim.big", claimBody(t, fmt.Sprintf("l%04d", i), "h", time.Hour), nil)); st.GetCode() != messages.Code_CODE_OK {
			t.Fatalf("claim: %v %q", st.GetCode(), st.GetMessage())
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	var (
		wg               sync.WaitGroup
		listed, refusals atomic.Int64
	)
	list := marshal(t, &messages.ListRequest{})
	for range 32 {
		lnc := b.Connect(t)
		wg.Go(func() {
			for ctx.Err() == nil {
				m, err := lnc.RequestWithContext(ctx, "lease.list.big", list)
				if err != nil {
					continue // the flood ends
				}
				var r messages.ListReply
				if proto.Unmarshal(m.Data, &r) == nil && r.GetStatus().GetCode() == messages.Code_CODE_OK {
					listed.Add(1)
				} else {
					refusals.Add(1)
				}
			}
		})
	}
	defer wg.Wait()
	defer stop()
	check := marshal(t, &messages.CheckRequest{Lease: "l", Holder: "h"})
	for i := range 100 {
		if st := status(t, request(t, nc, "lease.check.other", check, nil)); st.GetCode() != messages.Code_CODE_OK {
			t.Fatalf("check %d during the flood: %v %q", i, st.GetCode(), st.GetMessage())
		}
	}
	t.Logf("during 100 checks: %d lists served, %d refused", listed.Load(), refusals.Load())
}

// Refusals are counted in the metric, each one, and logged at most once
// in a while, not once each.
func TestRefusalsAreCountedAndLoggedOnce(t *testing.T) {
	b := startBounded(t, func(c *agent.Config) {
		c.MaxRequestsInflight = 2
		c.MaxNamespaceRequestsInflight = 1
	}, "g")
	nc := b.Connect(t)
	claim := claimBody(t, "l", "h", time.Minute)
	h := b.Hold(t, nc, 1, "lease.claim.g", claim)
	for range 10 {
		if st := status(t, request(t, nc, "lease.claim.g", claim, nil)); !refused(st, "MaxNamespaceRequestsInflight") {
			t.Fatalf("claim of g beyond its bound: %v %q", st.GetCode(), st.GetMessage())
		}
	}
	if got := counter(t, b.metric, map[string]string{"reason": metrics.RefusedNamespace, "namespace": "g"}); got != 10 {
		t.Errorf("refused{reason=namespace,namespace=g} = %v, want 10", got)
	}
	if n := strings.Count(b.logs.String(), "refusing requests"); n != 1 {
		t.Errorf("%d log lines about refusals, want 1:\n%s", n, b.logs.String())
	}
	h.Answer(t)
}

// claimOrList returns the body of a request on subject: a list or a claim.
func claimOrList(t *testing.T, subject string) []byte {
	if strings.HasPrefix(subject, "lease.list.") {
		return marshal(t, &messages.ListRequest{})
	}
	return claimBody(t, "l", "h", time.Minute)
}

// counter returns the value of leaseagent_requests_refused_total with
// labels.
func counter(t *testing.T, m *metrics.Metrics, labels map[string]string) float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "leaseagent_requests_refused_total" {
			continue
		}
	metric:
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue metric
				}
			}
			return s.GetCounter().GetValue()
		}
	}
	return 0
}
