package client_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/internal/testenv"
)

// proxy serves prefix "proxy" by forwarding each request to the agent on
// "lease". hold, if set, is called with each request's subject after the
// agent has answered, and may delay the reply (a slow network) or return
// false to drop it (an agent that stopped answering).
func proxy(t *testing.T, e *testenv.Env, hold func(subject string) bool) {
	t.Helper()
	pc := e.Connect(t)
	if _, err := pc.Subscribe("proxy.>", func(m *nats.Msg) {
		go func() {
			r, err := pc.Request("lease"+strings.TrimPrefix(m.Subject, "proxy"), m.Data, 5*time.Second)
			if err != nil || !hold(m.Subject) {
				return
			}
			_ = m.Respond(r.Data)
		}()
	}); err != nil {
		t.Fatal(err)
	}
	if err := pc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// leadership records what an election reported, and when.
type leadership struct {
	mu        sync.Mutex
	until     time.Time // the latest guarantee reported
	late      []string  // guarantees reported or work started past them
	started   chan time.Time
	cancelled chan time.Time
}

func newLeadership() *leadership {
	return &leadership{started: make(chan time.Time, 10), cancelled: make(chan time.Time, 10)}
}

func (l *leadership) election(holder string, d time.Duration) client.Election {
	return client.Election{
		Lease: "leader", Holder: holder, Duration: d,
		OnRenewed: func(until time.Time) {
			l.mu.Lock()
			defer l.mu.Unlock()
			if now := time.Now(); !now.Before(until) {
				l.late = append(l.late, "OnRenewed at "+now.String()+" reported the past guarantee "+until.String())
			}
			l.until = until
		},
		Run: func(ctx context.Context) {
			now := time.Now()
			l.mu.Lock()
			if ctx.Err() == nil && !now.Before(l.until.Add(-d/10)) {
				l.late = append(l.late, "Run started with a live context at "+now.String()+", past the cutoff of the guarantee "+l.until.String())
			}
			l.mu.Unlock()
			l.started <- now
			<-ctx.Done()
			l.cancelled <- time.Now()
		},
	}
}

func (l *leadership) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.late {
		t.Error(s)
	}
}

// An agent that receives renewals but no longer answers them: the work
// stops before the guarantee of the last answered claim runs out.
func TestLeaderOfAStalledAgentStopsBeforeItsGuaranteeRunsOut(t *testing.T) {
	e := realTimeAgent(t)
	var stalled atomic.Bool
	proxy(t, e, func(string) bool { return !stalled.Load() })
	n := newClient(t, e, client.WithPrefix("proxy")).Namespace("ns")
	l := newLeadership()
	result := make(chan error, 1)
	go func() { result <- n.Elect(context.Background(), l.election("a", time.Second)) }()
	<-l.started
	stalled.Store(true)
	var cancelled time.Time
	select {
	case cancelled = <-l.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the leader kept working without answered renewals")
	}
	if err := <-result; !errors.Is(err, client.ErrLeadershipLost) {
		t.Errorf("Elect = %v, want ErrLeadershipLost", err)
	}
	l.mu.Lock()
	until := l.until
	l.mu.Unlock()
	if !cancelled.Before(until) {
		t.Errorf("work cancelled at %v, not before the guarantee ran out at %v", cancelled, until)
	}
	l.check(t)
}

// An election cancelled while its claim is in flight may have won the
// lease without knowing it: with Release, it gives the lease up rather
// than leave the other candidates waiting for Duration.
func TestElectWithReleaseGivesUpAClaimInterruptedByCancellation(t *testing.T) {
	e := realTimeAgent(t)
	answered, unblock := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(unblock) })
	var claims atomic.Int32
	proxy(t, e, func(subject string) bool {
		if strings.HasPrefix(subject, "proxy.claim.") && claims.Add(1) == 1 {
			close(answered) // the agent has made the claim
			<-unblock       // its reply is lost on the way
			return false
		}
		return true
	})
	n := newClient(t, e, client.WithPrefix("proxy")).Namespace("ns")
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() {
		result <- n.Elect(ctx, client.Election{
			Lease: "leader", Holder: "a", Duration: time.Minute, Release: true,
			Run: func(ctx context.Context) { t.Error("Run called"); <-ctx.Done() },
		})
	}()
	<-answered
	cancel()
	if err := <-result; !errors.Is(err, context.Canceled) || !errors.Is(err, client.ErrClaimReleased) {
		t.Fatalf("Elect = %v, want context.Canceled and ErrClaimReleased", err)
	}
	st, err := newClient(t, e).Namespace("ns").Lease(context.Background(), "leader")
	if err != nil {
		t.Fatal(err)
	}
	if st.Held {
		t.Fatalf("after Elect returned, %q still holds the lease", st.Holder)
	}
}
