package actors

import (
	"errors"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/metrics"
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
