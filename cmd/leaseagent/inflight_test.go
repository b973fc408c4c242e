package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/leaseagent/lease/agent"
)

// The bounds on requests in flight come from flags, the environment or
// the config file, like any flag; the namespace's bound, left at its
// default, is capped at the agent's.
func TestInflightBoundsAreRead(t *testing.T) {
	file := writeFile(t, "bounds.toml", "max_requests_inflight = 300\nmax_namespace_requests_inflight = 30\n")
	for _, tc := range []struct {
		name           string
		env            map[string]string
		args           []string
		agent, perName int
	}{
		{"defaults", nil, nil, agent.DefaultMaxRequestsInflight, agent.DefaultMaxNamespaceRequestsInflight},
		{"flags", nil, []string{"--max-requests-inflight", "9000", "--max-namespace-requests-inflight", "500"}, 9000, 500},
		{"agent's below the namespace's default", nil, []string{"--max-requests-inflight", "64"}, 64, 64},
		{"environment", map[string]string{"LEASEAGENT_MAX_REQUESTS_INFLIGHT": "100", "LEASEAGENT_MAX_NAMESPACE_REQUESTS_INFLIGHT": "10"}, nil, 100, 10},
		{"config file", nil, []string{"--config", file}, 300, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseServe(t, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxInflight != tc.agent || cfg.MaxNSInflight != tc.perName {
				t.Fatalf("bounds %d and %d per namespace, want %d and %d", cfg.MaxInflight, cfg.MaxNSInflight, tc.agent, tc.perName)
			}
		})
	}
}

// A bound that is not a positive number, or a namespace's bound above
// the agent's, is a usage error naming the flag, from wherever it came.
func TestBadInflightBoundsAreUsageErrors(t *testing.T) {
	file := writeFile(t, "bounds.toml", fmt.Sprintf("max_namespace_requests_inflight = %d\n", agent.DefaultMaxRequestsInflight+1))
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"zero", nil, []string{"--max-requests-inflight", "0"}, []string{"--max-requests-inflight"}},
		{"negative per namespace", nil, []string{"--max-namespace-requests-inflight", "-5"}, []string{"--max-namespace-requests-inflight"}},
		{"namespace's above the agent's", nil, []string{"--max-requests-inflight", "100", "--max-namespace-requests-inflight", "200"},
			[]string{"--max-namespace-requests-inflight (200)", "--max-requests-inflight (100)"}},
		{"environment", map[string]string{"LEASEAGENT_MAX_REQUESTS_INFLIGHT": "-1"}, nil, []string{"--max-requests-inflight"}},
		{"environment, not a number", map[string]string{"LEASEAGENT_MAX_NAMESPACE_REQUESTS_INFLIGHT": "x"}, nil,
			[]string{"LEASEAGENT_MAX_NAMESPACE_REQUESTS_INFLIGHT"}},
		{"config file, above the agent's default", nil, []string{"--config", file},
			[]string{fmt.Sprintf("--max-namespace-requests-inflight (%d)", agent.DefaultMaxRequestsInflight+1), fmt.Sprintf("--max-requests-inflight (%d)", agent.DefaultMaxRequestsInflight)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseServe(t, tc.env, tc.args...)
			if exitCode(err) != exitUsage {
				t.Fatalf("error %v: exit code %d, want %d", err, exitCode(err), exitUsage)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}
