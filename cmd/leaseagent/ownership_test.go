package main

import (
	"strings"
	"testing"
)

func TestOwnershipUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--agent-id", "a.b"}, `--agent-id: "a.b" is not 1-64 letters, digits, '-' or '_'`},
		{[]string{"--agent-id", strings.Repeat("a", 65)}, "--agent-id:"},
		{[]string{"--ownership-duration", "-1s"}, "--ownership-duration: -1s is negative"},
		{[]string{"--ownership-duration", "1ns"}, "--ownership-duration: 1ns is below the minimum 100ms"},
		{[]string{"--ownership-renew", "5s"}, "--ownership-renew: 5s is not less than half of the ownership duration 10s"},
		{[]string{"--ownership-duration", "2s", "--ownership-renew", "1s"}, "--ownership-renew: 1s is not less than half"},
		{[]string{"--nats-url", "nats://127.0.0.1:1", "--agent-id", "x y"}, "--agent-id:"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) { requireUsageError(t, tc.want, tc.args...) })
	}
}

func TestAgentIDFromAHostName(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"leaseagent", "leaseagent"},
		{"node-1_a", "node-1_a"},
		{"db1.example.com", "db1-example-com"},
		{"höst", "h-st"},
		{strings.Repeat("x", 70), strings.Repeat("x", 64)},
	} {
		if got := agentIDFrom(tc.name); got != tc.want {
			t.Errorf("agentIDFrom(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}
