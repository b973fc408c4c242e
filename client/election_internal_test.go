package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/clock"
	"github.com/leaseagent/lease/internal/testenv"
)

// When the expired event that ends a leader's tenure is lost, its next
// renewal ends leadership instead: denied if another holder has the lease,
// or, if the renewal won the lease again, from the new fencing token (a new
// tenure, begun after the lease was free, when another holder may have led).
// A tenure begun by mistake is given back, but only once Run has returned:
// until then it keeps other candidates' work from overlapping Run's.
func TestRenewalsEndLeadershipWhenTheTenureEndedUnseen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		usurper bool   // another holder claims after the release
		want    string // in the error
	}{
		{"renewal denied", true, lease.ErrClaimDenied.Error()},
		{"renewal starts a new tenure", false, "released or expired since the last renewal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testenv.Start(t, func(cfg *actors.Config) { cfg.Clock = clock.System() })
			c, err := New(e.Connect(t))
			if err != nil {
				t.Fatal(err)
			}
			n := c.Namespace("ns")
			leading, stopping, windDown := make(chan struct{}), make(chan struct{}), make(chan struct{})
			el := Election{
				Lease: "leader", Holder: "a", Duration: 3 * time.Second, // renewals every second
				Run: func(ctx context.Context) {
					close(leading)
					<-ctx.Done()
					close(stopping)
					<-windDown // Run takes its time to stop
				},
			}
			if err := el.validate(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			fence, err := n.ClaimTenure(ctx, el.Lease, el.Holder, el.Duration)
			if err != nil || fence == 0 {
				t.Fatalf("claim = %d, %v", fence, err)
			}
			result := make(chan error, 1)
			// A nil channel of ended tenures: the expired event is lost.
			go func() { result <- n.lead(context.Background(), &el, tenure{start: start, fence: fence}, nil) }()
			<-leading
			m := e.Manager.Namespace("ns")
			if err := m.Release(ctx, el.Lease, el.Holder); err != nil {
				t.Fatal(err)
			}
			if tc.usurper {
				if err := m.ClaimContext(ctx, el.Lease, "usurper", time.Minute); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-stopping:
			case <-ctx.Done():
				t.Fatal("leader did not notice that its tenure ended")
			}
			// Run is still stopping: whoever holds the lease, it is not
			// free for another candidate to lead.
			if _, held, err := m.Lease(ctx, el.Lease); err != nil || !held {
				t.Fatalf("while Run stops, the lease is held: %v, %v; want held", held, err)
			}
			close(windDown)
			if err := <-result; !errors.Is(err, ErrLeadershipLost) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("lead = %v, want ErrLeadershipLost saying %q", err, tc.want)
			}
			info, held, err := m.Lease(ctx, el.Lease)
			switch {
			case err != nil:
				t.Fatal(err)
			case tc.usurper && info.Holder != "usurper":
				t.Fatalf("lease held by %q, want the usurper", info.Holder)
			case !tc.usurper && held:
				t.Fatalf("the tenure begun by mistake is still held, by %q", info.Holder)
			}
		})
	}
}
