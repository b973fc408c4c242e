package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/internal/testenv"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

func TestCallsRetryUntilAnAgentAnswers(t *testing.T) {
	e := testenv.Start(t)
	if err := e.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	n := newClient(t, e).Namespace("ns")
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { done <- n.ClaimContext(ctx, "l", "h", time.Minute) }()
	// The agent comes back while the claim is retrying.
	svc, err := agent.Start(agent.Config{Conn: e.Conn, Manager: e.Manager})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := <-done; err != nil {
		t.Fatalf("claim across the agent's restart: %v", err)
	}
	if err := n.Token("l", "h").Check(nil); err != nil {
		t.Fatal(err)
	}
}

func TestCallsFailUnavailableWhenNoAgentAnswersInTime(t *testing.T) {
	e := testenv.Start(t)
	if err := e.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	n := newClient(t, e).Namespace("ns")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := n.ClaimContext(ctx, "l", "h", time.Minute); !errors.Is(err, protocol.ErrUnavailable) {
		t.Fatalf("claim with no agent = %v, want ErrUnavailable", err)
	}
}

// An agent that dies between removing a lease and announcing it leaves a
// waiter without its event: the periodic re-ask must still wake it.
func TestWaitWakesWithoutTheEvent(t *testing.T) {
	e := testenv.Start(t)
	n := newClient(t, e, client.WithWaitPoll(20*time.Millisecond)).Namespace("ns")
	if err := n.ClaimContext(context.Background(), "l", "h", time.Minute); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.WaitUntilExpiredContext(context.Background(), "l") }()
	// Remove the lease behind the agent's back: no event is published.
	js, err := jetstream.New(e.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), natskv.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(context.Background(), "ns.l"); err != nil {
		t.Fatal(err)
	}
	e.Clock.Advance(time.Hour) // the agent's MaxSleep: it reloads and sees the lease gone
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never woke without the event")
	}
}

func TestNewValidatesOptions(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	for name, opt := range map[string]client.Option{
		"prefix with wildcard": client.WithPrefix("lease.*"),
		"empty prefix":         client.WithPrefix(""),
		"zero request timeout": client.WithRequestTimeout(0),
		"backoff out of order": client.WithRetry(time.Second, time.Millisecond),
		"zero wait poll":       client.WithWaitPoll(0),
		"zero call timeout":    client.WithCallTimeout(0),
		"negative backoff":     client.WithRetry(-time.Millisecond, time.Second),
		"nil option":           nil,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := client.New(nc, opt); err == nil {
				t.Fatal("New = nil error")
			}
		})
	}
	if _, err := client.New(nil); err == nil {
		t.Fatal("New(nil) = nil error")
	}
}
