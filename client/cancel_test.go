package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/internal/testenv"
)

// spy returns a channel that receives the subject of each message on
// subjects, seen by a connection that never answers.
func spy(t *testing.T, e *testenv.Env, subjects ...string) <-chan string {
	t.Helper()
	seen := make(chan string, 100)
	nc := e.Connect(t)
	for _, subject := range subjects {
		if _, err := nc.Subscribe(subject, func(m *nats.Msg) { seen <- m.Subject }); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return seen
}

// Cancelling a blocked call returns it at once, and leaves no goroutine
// and no subscription behind.
func TestCancelReturnsPromptlyAndLeaksNothing(t *testing.T) {
	for name, tc := range map[string]struct {
		// blocked is the request that shows the call is blocked; "" if the
		// call closes started itself.
		blocked string
		call    func(ctx context.Context, c, silent *client.Client, started chan<- struct{}) error
	}{
		"claim nothing answers": {"silent.claim.ns", func(ctx context.Context, _, silent *client.Client, _ chan<- struct{}) error {
			return silent.Namespace("ns").ClaimContext(ctx, "l", "h", time.Minute)
		}},
		"release nothing answers": {"silent.release.ns", func(ctx context.Context, _, silent *client.Client, _ chan<- struct{}) error {
			return silent.Namespace("ns").Release(ctx, "l", "h")
		}},
		"wait for a held lease": {"lease.state.ns", func(ctx context.Context, c, _ *client.Client, _ chan<- struct{}) error {
			return c.Namespace("ns").WaitUntilExpiredContext(ctx, "held")
		}},
		"elect as a follower": {"lease.claim.ns", func(ctx context.Context, c, _ *client.Client, _ chan<- struct{}) error {
			return c.Namespace("ns").Elect(ctx, client.Election{Lease: "held", Holder: "me", Duration: time.Hour, Run: func(context.Context) {}})
		}},
		"elect as the leader": {"", func(ctx context.Context, c, _ *client.Client, started chan<- struct{}) error {
			return c.Namespace("ns").Elect(ctx, client.Election{
				Lease: "free", Holder: "me", Duration: time.Hour, Release: true,
				OnNewLeader: func(string) {},
				Run:         func(ctx context.Context) { close(started); <-ctx.Done() },
			})
		}},
	} {
		t.Run(name, func(t *testing.T) {
			e := testenv.Start(t)
			// Requests on prefix "silent" reach a responder that never
			// answers, the spy; it sees every request.
			requests := spy(t, e, "lease.>", "silent.>")
			nc := e.Connect(t)
			c, err := client.New(nc, client.WithRequestTimeout(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			silent, err := client.New(nc, client.WithPrefix("silent"), client.WithRequestTimeout(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Namespace("ns").ClaimContext(context.Background(), "held", "other", time.Hour); err != nil {
				t.Fatal(err) // and the client's reply subscription exists
			}
			<-requests
			subs, goroutines := nc.NumSubscriptions(), goroutinesSettleTo(0)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			started, result := make(chan struct{}), make(chan error, 1)
			go func() { result <- tc.call(ctx, c, silent, started) }()
			if tc.blocked != "" {
				for subject := ""; subject != tc.blocked; subject = <-requests {
				}
			} else {
				<-started
			}
			cancel()
			select {
			case err := <-result:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("cancelled call = %v, want one wrapping context.Canceled", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("the call did not return within 2s of its cancellation")
			}
			if got := nc.NumSubscriptions(); got != subs {
				t.Errorf("%d subscriptions after the call, %d before", got, subs)
			}
			if got := goroutinesSettleTo(goroutines); got > goroutines {
				t.Errorf("%d goroutines after the call, %d before", got, goroutines)
			}
		})
	}
}
