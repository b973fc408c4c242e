// Package testenv starts, for a test, what a running leaseagent is: an
// embedded JetStream server, an actors.Manager on a fake clock and the
// agent's NATS service. Everything stops when the test ends.
package testenv

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/clock/clocktest"
	"github.com/leaseagent/lease/embedded"
)

// Epoch is where the fake clock starts.
var Epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Env is a running agent.
type Env struct {
	Server  *embedded.Server
	Conn    *nats.Conn // the agent's connection
	Clock   *clocktest.Fake
	Manager *actors.Manager
	Agent   *agent.Service
}

// Start starts an agent; edit may change the Manager's config.
func Start(t testing.TB, edit ...func(*actors.Config)) *Env {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	e := &Env{Server: srv, Clock: clocktest.NewFake(Epoch)}
	e.Conn = e.Connect(t)
	// Interest as leaseagent sets it with its embedded server.
	cfg := actors.Config{Conn: e.Conn, Clock: e.Clock, MaxSleep: time.Hour, Logger: quiet(), Interest: srv.Interest}
	for _, f := range edit {
		f(&cfg)
	}
	if e.Manager, err = actors.New(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Manager.Stop(context.Background()) })
	if e.Agent, err = agent.Start(agent.Config{Conn: e.Conn, Manager: e.Manager, Prefix: cfg.Prefix, Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Agent.Stop() })
	return e
}

// Connect opens a TCP connection to the server, closed when the test ends.
func (e *Env) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(e.Server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
