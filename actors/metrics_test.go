package actors

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/metrics"
	"github.com/leaseagent/lease/natskv"
)

// value returns the value of the counter or gauge name with the given
// labels, or 0 if it has no such series.
func value(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			if matches(s, labels) {
				switch {
				case s.GetCounter() != nil:
					return s.GetCounter().GetValue()
				case s.GetGauge() != nil:
					return s.GetGauge().GetValue()
				case s.GetHistogram() != nil:
					return float64(s.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return 0
}

func matches(s *dto.Metric, labels map[string]string) bool {
	for _, l := range s.GetLabel() {
		if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
			return false
		}
	}
	return true
}

func TestMetricsFollowLeaseChanges(t *testing.T) {
	m := metrics.New()
	h := newHarness(t, func(cfg *Config) { cfg.Metrics = m })
	n := h.start("ns")
	ns := map[string]string{"namespace": "ns"}
	result := func(r string) map[string]string { return map[string]string{"namespace": "ns", "result": r} }

	h.claim(n, "a", "h", time.Minute)
	h.claim(n, "b", "h", 2*time.Minute)
	h.clock.Advance(time.Second)
	h.claim(n, "a", "h", time.Minute) // extends
	if err := n.ClaimContext(h.ctx(), "a", "other", time.Minute); !errors.Is(err, lease.ErrClaimDenied) {
		t.Fatal(err)
	}
	if err := n.Release(h.ctx(), "b", "h"); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Minute + 1) // past a's extended expiry
	h.expectClaimed("ns", "a", "h")
	h.expectClaimed("ns", "b", "h")
	h.expectExpired("ns", "b", "h")
	h.expectExpired("ns", "a", "h")
	h.mustNotHold(n, "a", "h") // a round trip: the expiry has been applied

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"leaseagent_claims_total", result(metrics.ClaimGranted), 2},
		{"leaseagent_claims_total", result(metrics.ClaimExtended), 1},
		{"leaseagent_claims_total", result(metrics.ClaimDenied), 1},
		{"leaseagent_releases_total", ns, 1},
		{"leaseagent_expiries_total", ns, 1},
		{"leaseagent_leases_held", ns, 0},
		{"leaseagent_events_published_total", map[string]string{"kind": "claimed"}, 2},
		{"leaseagent_events_published_total", map[string]string{"kind": "expired"}, 2},
		{"leaseagent_namespace_owner_changes_total", ns, 1},
		{"leaseagent_store_write_duration_seconds", nil, 4}, // 2 claims, release, expiry; the extension is not written
	} {
		if got := value(t, m, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// A namespace this agent stops serving (unloaded, as when another agent
// takes it over) no longer counts its leases as held here: summed over
// agents, the gauge would count them twice.
func TestLeasesHeldGaugeIsZeroOnceNamespaceIsUnloaded(t *testing.T) {
	m := metrics.New()
	stopped := make(chan string, 10)
	h := newHarness(t, func(cfg *Config) {
		cfg.Metrics = m
		cfg.hooks.stopped = func(ns string) { stopped <- ns }
	})
	n := h.start("ns")
	h.claim(n, "a", "h", time.Minute)
	h.claim(n, "b", "h", time.Minute)
	ns := map[string]string{"namespace": "ns"}
	if got := value(t, m, "leaseagent_leases_held", ns); got != 2 {
		t.Fatalf("leases held while served = %v, want 2", got)
	}
	if err := h.m.Unload(h.ctx(), "ns"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	case <-time.After(patience):
		t.Fatal("unloaded namespace actor never stopped")
	}
	if got := value(t, m, "leaseagent_leases_held", ns); got != 0 {
		t.Fatalf("leases held after unload = %v, want 0", got)
	}
}

// A namespace actor restarted after a panic keeps its store, and counts
// the leases in it from the start: the outcome of a write from before the
// restart, arriving before the new actor's first load, must not take the
// gauge below zero (nor its count below the truth).
func TestLeasesHeldGaugeStaysTrueAcrossRestart(t *testing.T) {
	m := metrics.New()
	entered, release := make(chan struct{}), make(chan struct{})
	outcomeSeen := make(chan struct{})
	atLoad := make(chan float64, 1)
	var crash, seen, loads atomic.Int32
	h := newHarness(t, func(cfg *Config) {
		cfg.Metrics = m
		cfg.hooks.runWrite = func(ctx context.Context, w *natskv.Write) {
			if w.Lease() == "x" && w.Deletes() {
				close(entered)
				<-release
			}
			w.Run(ctx)
		}
		cfg.hooks.newStore = func(ns string, b *natskv.Bucket) (store, error) {
			c, err := natskv.NewClient(natskv.Config{Bucket: b, Namespace: ns, Clock: cfg.Clock})
			return &gatedLoad{Client: c, loads: &loads, gate: outcomeSeen}, err
		}
		cfg.hooks.receive = func(_ string, msg any) {
			switch msg := msg.(type) {
			case *claimRequest:
				if msg.lease == "boom" && crash.Add(1) == 1 {
					panic("boom")
				}
			case *roundDone:
				if msg.incarnation == 1 && msg.writes[0].write.Lease() == "x" && msg.writes[0].write.Deletes() && seen.Add(1) == 1 {
					close(outcomeSeen)
				}
			case *loaded:
				if msg.incarnation == 2 {
					// The outcome was handled before this message.
					atLoad <- gaugeValue(m, "leaseagent_leases_held", "ns")
				}
			}
		}
	})
	n := h.start("ns")
	h.claim(n, "x", "h", time.Hour)
	released := make(chan error, 1)
	go func() { released <- n.Release(h.ctx(), "x", "h") }()
	<-entered
	if err := n.ClaimContext(h.ctx(), "boom", "h", time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim that crashed the actor = %v, want ErrUnavailable", err)
	}
	close(release) // the release lands; its outcome reaches the new actor before its load
	select {
	case got := <-atLoad:
		if got != 0 {
			t.Fatalf("leases held after the release, before the restarted actor's load = %v, want 0", got)
		}
	case <-time.After(patience):
		t.Fatal("restarted actor never loaded")
	}
	<-released
}

// gatedLoad is a natskv.Client whose second and later full Loads (those of
// a restarted actor) wait for gate.
type gatedLoad struct {
	*natskv.Client
	loads *atomic.Int32
	gate  <-chan struct{}
}

func (g *gatedLoad) Load(ctx context.Context) (*natskv.Snapshot, error) {
	if g.loads.Add(1) > 1 {
		<-g.gate
	}
	return g.Client.Load(ctx)
}

// gaugeValue reads a gauge of one namespace, off the test's goroutine.
func gaugeValue(m *metrics.Metrics, name, namespace string) float64 {
	families, _ := m.Registry().Gather()
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			if matches(s, map[string]string{"namespace": namespace}) {
				return s.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// A claim that a namespace actor answers with an error because it crashed
// is a claim answered with an error: claims_total{result="error"} counts
// it, for the alert on failing claims to see it.
func TestClaimFailedByActorRestartIsCountedAsError(t *testing.T) {
	m := metrics.New()
	var crash atomic.Int32
	h := newHarness(t, func(cfg *Config) {
		cfg.Metrics = m
		cfg.hooks.receive = func(_ string, msg any) {
			if c, ok := msg.(*claimRequest); ok && c.lease == "boom" && crash.Add(1) == 1 {
				panic("boom")
			}
		}
	})
	n := h.start("ns")
	if err := n.ClaimContext(h.ctx(), "boom", "h", time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim that crashed the actor = %v, want ErrUnavailable", err)
	}
	h.claim(n, "boom", "h", time.Minute)
	for _, c := range []struct {
		result string
		want   float64
	}{{metrics.ClaimError, 1}, {metrics.ClaimGranted, 1}} {
		labels := map[string]string{"namespace": "ns", "result": c.result}
		if got := value(t, m, "leaseagent_claims_total", labels); got != c.want {
			t.Errorf("claims_total%v = %v, want %v", labels, got, c.want)
		}
	}
	if got := value(t, m, "leaseagent_actor_restarts_total", map[string]string{"namespace": "ns"}); got != 1 {
		t.Errorf("actor_restarts_total = %v, want 1", got)
	}
}
