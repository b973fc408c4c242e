package actors

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/leaseagent/lease/policy"
)

// jujuPolicy is Juju's two namespaces, refusing any other.
func jujuPolicy() *policy.Policy {
	return &policy.Policy{
		DenyUnknown: true,
		Namespaces: map[string]policy.Namespace{
			"application-leadership": {
				MinDuration: 5 * time.Second,
				MaxDuration: 5 * time.Minute,
				Lease:       policy.MustPattern(`^[a-z][a-z0-9-]*$`),
				Holder:      policy.MustPattern(`^[a-z][a-z0-9-]*/[0-9]+$`),
			},
			"singular-controller": {MinDuration: time.Second, MaxDuration: time.Minute},
		},
	}
}

func TestPolicyRefusesBeforeAnythingChanges(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Policy = jujuPolicy() })
	const al = "application-leadership"
	app := h.start(al)
	h.claim(app, "mysql", "mysql/0", time.Minute)
	h.expectClaimed(al, "mysql", "mysql/0")
	rev := h.lastRevision()

	ctx := h.ctx()
	for _, tc := range []struct {
		name string
		call func(m *Manager) error
		want string
	}{
		{"claim below the minimum", func(m *Manager) error {
			return m.Namespace(al).ClaimContext(ctx, "mysql", "mysql/1", time.Second)
		}, `namespace "application-leadership": duration 1s is below the minimum 5s`},
		{"claim above the maximum", func(m *Manager) error {
			return m.Namespace(al).ClaimContext(ctx, "mysql", "mysql/1", 10*time.Minute)
		}, `namespace "application-leadership": duration 10m0s is above the maximum 5m0s`},
		{"extension above the maximum", func(m *Manager) error {
			return m.Namespace(al).ClaimContext(ctx, "mysql", "mysql/0", 10*time.Minute)
		}, "above the maximum 5m0s"},
		{"claim above the global maximum", func(m *Manager) error {
			return m.Namespace(al).ClaimContext(ctx, "mysql", "mysql/1", 2*time.Hour)
		}, "is not in (0, 1h0m0s]"},
		{"claim of a bad lease name", func(m *Manager) error {
			return m.Namespace(al).ClaimContext(ctx, "MySQL", "mysql/1", time.Minute)
		}, `lease name "MySQL" does not match lease_pattern`},
		{"claim by a bad holder", func(m *Manager) error {
			return m.Namespace(al).ClaimContext(ctx, "mysql", "machine-0", time.Minute)
		}, `holder name "machine-0" does not match holder_pattern`},
		{"claim in an unknown namespace", func(m *Manager) error {
			return m.Namespace("other").ClaimContext(ctx, "l", "h", time.Minute)
		}, `namespace "other": not allowed`},
		{"check of a bad lease name", func(m *Manager) error {
			return m.Namespace(al).Token("My_SQL", "mysql/0").(*Token).CheckContext(ctx, nil)
		}, `lease name "My_SQL" does not match`},
		{"check by a bad holder", func(m *Manager) error {
			return m.Namespace(al).Token("mysql", "root").(*Token).CheckContext(ctx, nil)
		}, `holder name "root" does not match`},
		{"check in an unknown namespace", func(m *Manager) error {
			return m.Namespace("other").Token("l", "h").(*Token).CheckContext(ctx, nil)
		}, `namespace "other": not allowed`},
		{"wait on a bad lease name", func(m *Manager) error {
			return m.Namespace(al).WaitUntilExpiredContext(ctx, "Bad")
		}, `lease name "Bad" does not match`},
		{"wait in an unknown namespace", func(m *Manager) error {
			return m.Namespace("other").WaitUntilExpiredContext(ctx, "l")
		}, `namespace "other": not allowed`},
		{"release by a bad holder", func(m *Manager) error {
			return m.Namespace(al).Release(ctx, "mysql", "mysql")
		}, `holder name "mysql" does not match`},
		{"release in an unknown namespace", func(m *Manager) error {
			return m.Namespace("other").Release(ctx, "l", "h")
		}, `namespace "other": not allowed`},
		{"list of an unknown namespace", func(m *Manager) error {
			_, err := m.Namespace("other").Leases(ctx)
			return err
		}, `namespace "other": not allowed`},
		{"state of a bad lease name", func(m *Manager) error {
			_, _, err := m.Namespace(al).Lease(ctx, "a_b")
			return err
		}, `lease name "a_b" does not match`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(h.m)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("got %v, want an error wrapping ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q, want it to name the rule: %q", err, tc.want)
			}
		})
	}

	// Nothing was written or announced, the holder still holds, and the
	// refused namespace never got an actor.
	if got := h.lastRevision(); got != rev {
		t.Errorf("bucket revision %d after refused requests, want %d", got, rev)
	}
	h.noMoreEvents()
	h.mustHold(app, "mysql", "mysql/0")
	if _, ok := h.m.rt.namespaces.Load("other"); ok {
		t.Error("a refused namespace got an actor")
	}
}

func TestPolicyAllows(t *testing.T) {
	p := jujuPolicy()
	p.DenyUnknown = false
	h := newHarness(t, func(c *Config) { c.Policy = p })
	ctx := h.ctx()
	for _, tc := range []struct {
		ns, lease, holder string
		d                 time.Duration
	}{
		{"application-leadership", "mysql", "mysql/0", 5 * time.Second},
		{"application-leadership", "wordpress", "wordpress/12", 5 * time.Minute},
		{"singular-controller", "controller-uuid", "machine-0", time.Minute},
		{"anything-else", "L", "H", time.Hour}, // unknown: global limits only
	} {
		if err := h.m.Namespace(tc.ns).ClaimContext(ctx, tc.lease, tc.holder, tc.d); err != nil {
			t.Errorf("claim %s/%s by %s for %v: %v", tc.ns, tc.lease, tc.holder, tc.d, err)
		}
	}
	leases, err := h.m.Namespace("application-leadership").Leases(ctx)
	if err != nil || len(leases) != 2 {
		t.Errorf("leases = %v, %v; want mysql and wordpress", leases, err)
	}
}

func TestConfigValidatesPolicy(t *testing.T) {
	h := newHarness(t) // for a connection
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad rule", Config{Policy: &policy.Policy{Namespaces: map[string]policy.Namespace{
			"x": {MinDuration: time.Minute, MaxDuration: time.Second},
		}}}, `actors: Config.Policy: namespace "x": max_duration 1s is below min_duration 1m0s`},
		{"above MaxDuration", Config{MaxDuration: time.Minute, Policy: jujuPolicy()},
			`actors: Config.Policy: namespace "application-leadership": max_duration 5m0s is above the global max_duration 1m0s`},
		{"above the default MaxDuration", Config{Policy: &policy.Policy{Namespaces: map[string]policy.Namespace{
			"x": {MaxDuration: 2 * time.Hour},
		}}}, "above the global max_duration 1h0m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Conn = h.nc
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
			m, err := New(context.Background(), cfg)
			if err == nil {
				_ = m.Stop(context.Background())
				t.Fatal("New accepted the config")
			}
		})
	}
}
