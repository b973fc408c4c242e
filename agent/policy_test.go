package agent_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/internal/testenv"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/policy"
	"github.com/leaseagent/lease/protocol"
)

func TestPolicyOverNATS(t *testing.T) {
	e := testenv.Start(t, func(c *actors.Config) {
		c.Policy = &policy.Policy{
			DenyUnknown: true,
			Namespaces: map[string]policy.Namespace{
				"application-leadership": {
					MinDuration: 5 * time.Second,
					MaxDuration: 5 * time.Minute,
					Lease:       policy.MustPattern(`^[a-z][a-z0-9-]*$`),
					Holder:      policy.MustPattern(`^[a-z][a-z0-9-]*/[0-9]+$`),
				},
			},
		}
	})
	nc := e.Connect(t)

	// A refused claim is CODE_INVALID_ARGUMENT naming the rule.
	msg := request(t, nc, "lease.claim.application-leadership", claimBody(t, "mysql", "mysql/0", time.Second), nil)
	st := status(t, msg)
	if st.GetCode() != messages.Code_CODE_INVALID_ARGUMENT ||
		!strings.Contains(st.GetMessage(), `namespace "application-leadership": duration 1s is below the minimum 5s`) {
		t.Errorf("claim below the minimum: status %v", st)
	}

	// Through the client, the same refusals are protocol.ErrInvalidArgument.
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	app := c.Namespace("application-leadership")
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"bad holder", func() error { return app.ClaimContext(ctx, "mysql", "root", time.Minute) }, `holder name "root" does not match`},
		{"bad lease", func() error { return app.ClaimContext(ctx, "MySQL", "mysql/0", time.Minute) }, `lease name "MySQL" does not match`},
		{"too long", func() error { return app.ClaimContext(ctx, "mysql", "mysql/0", time.Hour) }, "above the maximum 5m0s"},
		{"unknown namespace", func() error { return c.Namespace("other").ClaimContext(ctx, "l", "h", time.Minute) }, `namespace "other": not allowed`},
		{"list of unknown namespace", func() error { _, err := c.Namespace("other").Leases(ctx); return err }, `namespace "other": not allowed`},
		{"wait on a bad lease", func() error { return app.WaitUntilExpiredContext(ctx, "Bad") }, `lease name "Bad" does not match`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, protocol.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want protocol.ErrInvalidArgument naming %q", err, tc.want)
			}
		})
	}

	// What the policy allows works.
	if err := app.ClaimContext(ctx, "mysql", "mysql/0", time.Minute); err != nil {
		t.Fatalf("allowed claim: %v", err)
	}
	if err := app.Token("mysql", "mysql/0").(*client.Token).CheckContext(ctx, nil); err != nil {
		t.Errorf("check of the allowed claim: %v", err)
	}
}
