// Package testenv starts, for a test, what a running leaseagent is: an
// embedded JetStream server, an actors.Manager on a fake clock and the
// agent's NATS service. Everything stops when the test ends.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/clock/clocktest"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
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
	// Ghost receives the requests forwarded to the ghost (Options.Ghosted).
	Ghost <-chan *nats.Msg
}

// Options says what StartWith starts.
type Options struct {
	// Actors and Agent, if set, change the Manager's and the agent's
	// configs.
	Actors func(*actors.Config)
	Agent  func(*agent.Config)
	// Ghosted, if not empty, gives the agent Ownership (agent ID "agent")
	// and has GhostID own these namespaces. The ghost is an agent that
	// exists only as a subscription: the agent forwards it their requests,
	// which stay in flight, held, until the test answers them (Env.Hold).
	// The fake clock does not move, so the ghost's ownerships never end.
	Ghosted []string
}

// GhostID is the agent ID of the ghost (Options.Ghosted).
const GhostID = "ghost"

// Start starts an agent; edit may change the Manager's config.
func Start(t testing.TB, edit ...func(*actors.Config)) *Env {
	t.Helper()
	return StartWith(t, Options{Actors: func(cfg *actors.Config) {
		for _, f := range edit {
			f(cfg)
		}
	}})
}

// StartWith starts an agent as o says.
func StartWith(t testing.TB, o Options) *Env {
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
	if o.Actors != nil {
		o.Actors(&cfg)
	}
	if e.Manager, err = actors.New(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Manager.Stop(context.Background()) })
	acfg := agent.Config{Conn: e.Conn, Manager: e.Manager, Prefix: cfg.Prefix, Logger: quiet()}
	if len(o.Ghosted) > 0 {
		e.startGhost(t, cfg.Prefix, o.Ghosted)
		acfg.Ownership = &agent.Ownership{AgentID: "agent"}
	}
	if o.Agent != nil {
		o.Agent(&acfg)
	}
	if e.Agent, err = agent.Start(acfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Agent.Stop() })
	return e
}

// startGhost records the ghost's ownership of namespaces in the bucket
// and subscribes to the requests forwarded to it.
func (e *Env) startGhost(t testing.TB, prefix string, namespaces []string) {
	t.Helper()
	owners, err := natskv.NewClient(natskv.Config{Bucket: e.Manager.Bucket(), Namespace: agent.OwnersNamespace})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for _, ns := range namespaces {
		if err := owners.ClaimLeaseContext(ctx, ns, lease.Request{Holder: GhostID, Duration: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	ghost := make(chan *nats.Msg, 1000)
	nc := e.Connect(t)
	if prefix == "" {
		prefix = protocol.DefaultPrefix
	}
	if _, err := nc.Subscribe("_leaseagent."+prefix+"."+GhostID+".>", func(m *nats.Msg) { ghost <- m }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e.Ghost = ghost
}

// patience bounds each wait of the helpers.
const patience = 10 * time.Second

// Held are requests the ghost holds, and where their callers' replies
// arrive.
type Held struct {
	msgs    []*nats.Msg
	replies <-chan *messages.Status
}

// Hold sends n requests on subject from nc, each with body, and returns
// once the ghost holds them all: the agent has them in flight.
func (e *Env) Hold(t testing.TB, nc *nats.Conn, n int, subject string, body []byte) *Held {
	t.Helper()
	h := &Held{replies: Send(t, nc, n, subject, body)}
	for range n {
		select {
		case m := <-e.Ghost:
			h.msgs = append(h.msgs, m)
		case st := <-h.replies:
			t.Fatalf("a request to hold on %s was answered: %v %q", subject, st.GetCode(), st.GetMessage())
		case <-time.After(patience):
			t.Fatalf("the ghost received %d of %d requests on %s", len(h.msgs), n, subject)
		}
	}
	return h
}

// Answer has the ghost answer the requests it holds, OK, and waits for
// their callers to receive that.
func (h *Held) Answer(t testing.TB) {
	t.Helper()
	ok, err := proto.Marshal(&messages.ClaimReply{Status: protocol.Status(nil)})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range h.msgs {
		if err := m.Respond(ok); err != nil {
			t.Fatal(err)
		}
	}
	for range h.msgs {
		if st := <-h.replies; st.GetCode() != messages.Code_CODE_OK {
			t.Fatalf("a held request, answered: %v %q", st.GetCode(), st.GetMessage())
		}
	}
}

// Send sends n requests on subject from nc at once; each one's reply
// status arrives on the channel returned (CODE_INTERNAL if there is no
// reply within a while).
func Send(t testing.TB, nc *nats.Conn, n int, subject string, body []byte) <-chan *messages.Status {
	t.Helper()
	replies := make(chan *messages.Status, n)
	for range n {
		go func() {
			m, err := nc.Request(subject, body, patience)
			if err != nil {
				replies <- protocol.Status(fmt.Errorf("%w: %w", protocol.ErrInternal, err))
				return
			}
			var r messages.ClaimReply // every reply has its status in field 1
			if err := proto.Unmarshal(m.Data, &r); err != nil {
				replies <- protocol.Status(fmt.Errorf("%w: %w", protocol.ErrInternal, err))
				return
			}
			replies <- r.GetStatus()
		}()
	}
	return replies
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

// SyncBuffer is a bytes.Buffer that goroutines may write at once: a
// logger's output, read by the test.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
