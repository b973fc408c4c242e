package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/internal/testenv"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/protocol"
)

// fakeAgent answers on prefix "fake" as script says for each attempt:
// "drop" (receive and never answer), "unavailable", "refused" (unavailable,
// refused before anything was done) or "ok".
type fakeAgent struct {
	attempts atomic.Int32
	received chan string // the subject of each request, as it arrives
}

func startFakeAgent(t *testing.T, e *testenv.Env, script ...string) *fakeAgent {
	t.Helper()
	f := &fakeAgent{received: make(chan string, 100)}
	nc := e.Connect(t)
	_, err := nc.Subscribe("fake.>", func(m *nats.Msg) {
		i := int(f.attempts.Add(1)) - 1
		f.received <- m.Subject
		what := "ok"
		if i < len(script) {
			what = script[i]
		}
		var status *messages.Status
		switch what {
		case "drop":
			return
		case "unavailable":
			status = protocol.Status(fmt.Errorf("%w: restarting", protocol.ErrUnavailable))
		case "refused":
			status = protocol.Status(protocol.Refused(fmt.Errorf("%w: too many requests in flight", protocol.ErrUnavailable)))
		default:
			status = protocol.Status(nil)
		}
		// Every reply type has the status as field 1.
		data, err := proto.Marshal(&messages.ErrorReply{Status: status})
		if err == nil {
			_ = m.Respond(data)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRetriesFollowTheDocumentedRules(t *testing.T) {
	for name, tc := range map[string]struct {
		first    string
		call     func(context.Context, *client.Namespace) error
		attempts int32
		wantErr  error // nil: success
	}{
		"claim is retried after a timeout":         {"drop", claimL, 2, nil},
		"claim is retried after unavailable":       {"unavailable", claimL, 2, nil},
		"check is retried after a timeout":         {"drop", checkL, 2, nil},
		"state is retried after unavailable":       {"unavailable", stateL, 2, nil},
		"release is not retried after a timeout":   {"drop", releaseL, 1, protocol.ErrUnavailable},
		"release is not retried after unavailable": {"unavailable", releaseL, 1, protocol.ErrUnavailable},
		"release is retried after a refusal":       {"refused", releaseL, 2, nil},
	} {
		t.Run(name, func(t *testing.T) {
			e := testenv.Start(t)
			f := startFakeAgent(t, e, tc.first)
			n := newClient(t, e, client.WithPrefix("fake"), client.WithRequestTimeout(100*time.Millisecond),
				client.WithRetry(time.Millisecond, time.Millisecond)).Namespace("ns")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := tc.call(ctx, n)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
			if got := f.attempts.Load(); got != tc.attempts {
				t.Fatalf("%d attempts, want %d", got, tc.attempts)
			}
		})
	}
}

func claimL(ctx context.Context, n *client.Namespace) error {
	return n.ClaimContext(ctx, "l", "h", time.Minute)
}
func checkL(ctx context.Context, n *client.Namespace) error {
	return n.Token("l", "h").(*client.Token).CheckContext(ctx, nil)
}
func stateL(ctx context.Context, n *client.Namespace) error { _, err := n.Lease(ctx, "l"); return err }
func releaseL(ctx context.Context, n *client.Namespace) error {
	return n.Release(ctx, "l", "h")
}

// A release that found no agent at all reached none, so it is retried
// until one answers.
func TestReleaseIsRetriedWhileNoAgentAnswers(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	c, err := client.New(nc, client.WithRetry(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	n := c.Namespace("ns")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.ClaimContext(ctx, "l", "h", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	// Stop drains: the server may route requests to the agent until it
	// has seen the agent's unsubscriptions.
	if err := e.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	sent := nc.Stats().OutMsgs
	done := make(chan error, 1)
	go func() { done <- n.Release(ctx, "l", "h") }()
	// Once the release has been sent twice, its first attempt found no
	// responder and was retried.
	for tick := time.NewTicker(time.Millisecond); nc.Stats().OutMsgs < sent+2; <-tick.C {
		select {
		case err := <-done:
			t.Fatalf("release with no agent = %v before a retry", err)
		default:
		}
	}
	svc, err := agent.Start(agent.Config{Conn: e.Conn, Manager: e.Manager})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := <-done; err != nil {
		t.Fatalf("release across the agent's restart: %v", err)
	}
	if st, err := n.Lease(ctx, "l"); err != nil || st.Held {
		t.Fatalf("after the release: %+v, %v", st, err)
	}
}

// A request the agent refuses because too many are in flight is retried,
// with backoff, until the agent takes it: whatever its operation, a
// release too, since the refusal says nothing was done.
func TestRequestsRefusedForLoadAreRetried(t *testing.T) {
	leases := func(ctx context.Context, n *client.Namespace) error { _, err := n.Leases(ctx); return err }
	for name, tc := range map[string]struct {
		op   string
		call func(context.Context, *client.Namespace) error
	}{
		"claim":   {protocol.OpClaim, claimL},
		"check":   {protocol.OpCheck, checkL},
		"state":   {protocol.OpState, stateL},
		"list":    {protocol.OpList, leases},
		"release": {protocol.OpRelease, releaseL},
	} {
		t.Run(name, func(t *testing.T) {
			e, held := fullAgent(t)
			n := newClient(t, e, client.WithRetry(time.Millisecond, 10*time.Millisecond)).Namespace("ns")
			seen := spy(t, e, protocol.RequestSubject(protocol.DefaultPrefix, tc.op, "ns"))
			done := make(chan error, 1)
			go func() { done <- tc.call(ctxT(t), n) }()
			// Refused, and sent again: the call goes on.
			for range 2 {
				select {
				case <-seen:
				case err := <-done:
					t.Fatalf("%s with the agent full = %v, before it was retried", name, err)
				}
			}
			held.Answer(t) // the agent has room again
			if err := <-done; err != nil {
				t.Fatalf("%s once the agent had room = %v", name, err)
			}
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fullAgent starts an agent that takes one request in flight, has holder
// h claim lease l of namespace ns through it, then fills it with a request
// the ghost holds.
func fullAgent(t *testing.T) (*testenv.Env, *testenv.Held) {
	t.Helper()
	e := testenv.StartWith(t, testenv.Options{
		Ghosted: []string{"g"},
		Agent:   func(c *agent.Config) { c.MaxRequestsInflight = 1 },
	})
	if err := claimL(ctxT(t), newClient(t, e).Namespace("ns")); err != nil {
		t.Fatal(err)
	}
	claim, err := proto.Marshal(&messages.ClaimRequest{Lease: "l", Holder: "h", Duration: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	return e, e.Hold(t, e.Connect(t), 1, "lease.claim.g", claim)
}
