// Package metrics defines leaseagent's Prometheus metrics and serves them,
// with health and readiness endpoints, over HTTP.
//
// A Metrics registers its collectors on a registry of its own (no global
// state). Every method is safe on a nil *Metrics, which records nothing, so
// the manager and the service can be run without metrics at no cost.
//
// Namespaces are metric labels: a fleet with an unbounded number of
// namespaces gets an unbounded number of series.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Results of a claim, the values of the "result" label.
const (
	ClaimGranted  = "granted"  // a new holder
	ClaimExtended = "extended" // the holder extended (or already held long enough)
	ClaimDenied   = "denied"   // another holder holds it
	ClaimError    = "error"    // anything else
)

// Bounds a refused request was beyond, the values of the "reason" label
// of leaseagent_requests_refused_total.
const (
	RefusedAgent     = "agent"     // the agent's requests in flight (agent.Config.MaxRequestsInflight)
	RefusedNamespace = "namespace" // one namespace's (agent.Config.MaxNamespaceRequestsInflight)
)

// Metrics is the set of leaseagent's metrics.
type Metrics struct {
	registry *prometheus.Registry

	claims          *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	refused         *prometheus.CounterVec
	leasesHeld      *prometheus.GaugeVec
	expiries        *prometheus.CounterVec
	releases        *prometheus.CounterVec
	events          *prometheus.CounterVec
	eventErrors     *prometheus.CounterVec
	writeDuration   prometheus.Histogram
	conflicts       *prometheus.CounterVec
	ownerChanges    *prometheus.CounterVec
	actorRestarts   *prometheus.CounterVec
}

// New returns the metrics, registered on a new registry together with the
// Go runtime and process collectors.
func New() *Metrics {
	latency := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaseagent_claims_total",
			Help: "Claims answered, by namespace and result (granted, extended, denied, error).",
		}, []string{"namespace", "result"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "leaseagent_request_duration_seconds",
			Help:    "Time from receiving a protocol request to sending its reply, by operation.",
			Buckets: latency,
		}, []string{"operation"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaseagent_requests_refused_total",
			Help: "Requests refused at once with CODE_UNAVAILABLE because too many were in flight, by reason (agent, namespace) and, for namespace, the namespace.",
		}, []string{"reason", "namespace"}),
		leasesHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leaseagent_leases_held",
			Help: "Leases held, by namespace, as this agent knows them.",
		}, []string{"namespace"}),
		expiries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaseagent_expiries_total",
			Help: "Leases this agent expired, by namespace.",
		}, []string{"namespace"}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaseagent_releases_total",
			Help: "Leases released by their holders, by namespace.",
		}, []string{"namespace"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaseagent_events_published_total",
			Help: "Events published, by kind (claimed, expired); with the embedded server, only those some subscriber would receive.",
		}, []string{"kind"}),
		eventErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaseagent_event_publish_errors_total",
			Help: "Events that could not be published, by kind.",
		}, []string{"kind"}),
		writeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leaseagent_store_write_duration_seconds",
			Help:    "Time a revision-checked write to the KV bucket took, from publish to acknowledgement.",
			Buckets: latency,
		}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaseagent_store_conflicts_total",
			Help: "Writes that lost a race to another writer (a revision check failed), by namespace.",
		}, []string{"namespace"}),
		ownerChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaseagent_namespace_owner_changes_total",
			Help: "Times this agent took ownership of a namespace (started serving it), by namespace.",
		}, []string{"namespace"}),
		actorRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaseagent_actor_restarts_total",
			Help: "Restarts of a namespace actor after a panic, by namespace.",
		}, []string{"namespace"}),
	}
	m.registry.MustRegister(
		m.claims, m.requestDuration, m.refused, m.leasesHeld, m.expiries, m.releases, m.events, m.eventErrors,
		m.writeDuration, m.conflicts, m.ownerChanges, m.actorRestarts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry returns the registry the metrics are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Claim counts a claim's result.
func (m *Metrics) Claim(namespace, result string) {
	if m != nil {
		m.claims.WithLabelValues(namespace, result).Inc()
	}
}

// Request records how long a protocol request took.
func (m *Metrics) Request(operation string, d time.Duration) {
	if m != nil {
		m.requestDuration.WithLabelValues(operation).Observe(d.Seconds())
	}
}

// Refused counts a request refused because too many were in flight:
// beyond the agent's bound (RefusedAgent; namespace is not recorded, so
// that requests naming ever new namespaces add no series) or its
// namespace's (RefusedNamespace).
func (m *Metrics) Refused(reason, namespace string) {
	if m == nil {
		return
	}
	if reason != RefusedNamespace {
		namespace = ""
	}
	m.refused.WithLabelValues(reason, namespace).Inc()
}

// LeasesHeld sets the number of leases held in a namespace.
func (m *Metrics) LeasesHeld(namespace string, n int) {
	if m != nil {
		m.leasesHeld.WithLabelValues(namespace).Set(float64(n))
	}
}

// Expired counts a lease the agent expired.
func (m *Metrics) Expired(namespace string) {
	if m != nil {
		m.expiries.WithLabelValues(namespace).Inc()
	}
}

// Released counts a lease its holder released.
func (m *Metrics) Released(namespace string) {
	if m != nil {
		m.releases.WithLabelValues(namespace).Inc()
	}
}

// Event counts an event published, or one that failed.
func (m *Metrics) Event(kind string, err error) {
	switch {
	case m == nil:
	case err != nil:
		m.eventErrors.WithLabelValues(kind).Inc()
	default:
		m.events.WithLabelValues(kind).Inc()
	}
}

// StoreWrite records how long a store write took.
func (m *Metrics) StoreWrite(d time.Duration) {
	if m != nil {
		m.writeDuration.Observe(d.Seconds())
	}
}

// Conflict counts a write that lost a race.
func (m *Metrics) Conflict(namespace string) {
	if m != nil {
		m.conflicts.WithLabelValues(namespace).Inc()
	}
}

// OwnerChange counts this agent taking ownership of a namespace.
func (m *Metrics) OwnerChange(namespace string) {
	if m != nil {
		m.ownerChanges.WithLabelValues(namespace).Inc()
	}
}

// ActorRestart counts a namespace actor restarted after a panic.
func (m *Metrics) ActorRestart(namespace string) {
	if m != nil {
		m.actorRestarts.WithLabelValues(namespace).Inc()
	}
}
