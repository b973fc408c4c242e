package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// refusedErr is what nats.go reports when the server refuses subject.
func refusedErr(subject string) error {
	return fmt.Errorf("%w: Permissions Violation for Publish to %q", nats.ErrPermissionViolation, subject)
}

// TestAgentNATSErrorsFailTheStart: a refusal during start-up ends the
// start's context at once and becomes the start's error, naming the
// subject, in place of the timeout it caused; nothing is logged.
func TestAgentNATSErrorsFailTheStart(t *testing.T) {
	logs := &syncBuffer{}
	ctx, failStart := context.WithCancelCause(context.Background())
	defer failStart(nil)
	e := &agentNATSErrors{logger: slog.New(slog.NewTextHandler(logs, nil)), failStart: failStart}

	e.handle(nil, nil, refusedErr("$JS.API.STREAM.INFO.KV_leases"))
	if ctx.Err() == nil {
		t.Fatal("a refusal during start-up did not end the start's context")
	}
	err := e.started(ctx, nil, context.DeadlineExceeded)
	if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), `"$JS.API.STREAM.INFO.KV_leases"`) ||
		!strings.Contains(err.Error(), "The agent's own permissions") {
		t.Errorf("started returned %v, want the refusal naming the subject and the doc", err)
	}
	// Refusals reported after the start failed add nothing.
	e.handle(nil, nil, refusedErr("lease.claim.*"))
	if logs.String() != "" {
		t.Errorf("logged %q", logs.String())
	}
}

// TestAgentNATSErrorsLogRefusalsOnceServing: once the agent serves, a
// refusal is logged as an error naming the subject, the next ones within
// refusalLogEvery are counted, not logged; other errors are warnings.
func TestAgentNATSErrorsLogRefusalsOnceServing(t *testing.T) {
	logs := &syncBuffer{}
	ctx, failStart := context.WithCancelCause(context.Background())
	defer failStart(nil)
	e := &agentNATSErrors{logger: slog.New(slog.NewTextHandler(logs, nil)), failStart: failStart}
	if err := e.started(ctx, nil, nil); err != nil {
		t.Fatalf("started: %v", err)
	}

	e.handle(nil, nil, refusedErr("lease.expired.a.one"))
	e.handle(nil, nil, refusedErr("lease.expired.a.two"))
	e.handle(nil, nil, nats.ErrSlowConsumer)
	lines := strings.Split(strings.TrimSuffix(logs.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("logged %d lines, want 2:\n%s", len(lines), logs.String())
	}
	if !strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], "lease.expired.a.one") || !strings.Contains(lines[0], "docs/security.md") {
		t.Errorf("first refusal logged as %q", lines[0])
	}
	if !strings.Contains(lines[1], "level=WARN") || !strings.Contains(lines[1], "slow consumer") {
		t.Errorf("slow consumer logged as %q", lines[1])
	}
	if e.unlogged != 1 {
		t.Errorf("%d refusals counted unlogged, want 1", e.unlogged)
	}
}
