package agent

import (
	"fmt"
	"sync"
	"time"

	"github.com/leaseagent/lease/metrics"
	"github.com/leaseagent/lease/protocol"
)

// Defaults of the bounds on requests in flight (Config).
const (
	DefaultMaxRequestsInflight = 4096
	// DefaultMaxNamespaceRequestsInflight is above natskv.MaxBatch: with
	// group commit, a namespace's writes decided at once may fill an
	// atomic batch.
	DefaultMaxNamespaceRequestsInflight = 1024
)

// listsPerNamespace is how many lists of one namespace may be in flight at
// once when nothing else of it is: a list counts as this fraction of
// MaxNamespaceRequestsInflight (inflight.weight). A list's work (encoding
// and sending a reply of up to the max payload) runs outside the
// namespace's actor, on the CPU, in parallel with the
// others: measured, 512 clients listing a 10k-lease namespace flat out
// served as many lists with 8 in flight as with 512, and with 128 in
// flight another namespace's checks still took up to a second.
const listsPerNamespace = 8

// refusalLogEvery is how often, at most, the agent logs that it refuses
// requests for load; the metric counts every one.
const refusalLogEvery = 10 * time.Second

// inflight counts the requests in flight, received and not yet answered,
// in all and by namespace, and refuses those beyond its bounds. Each
// request counts as its weight.
type inflight struct {
	max, maxPerNamespace int

	mu          sync.Mutex
	total       int
	byNamespace map[string]int // namespaces with requests in flight only
	// Since the last log line (at logged): refusals by reason, and the
	// namespace last refused for its own bound.
	refused   map[string]int
	namespace string
	logged    time.Time
}

// refusals are what a log line about refusals reports.
type refusals struct {
	byReason  map[string]int
	namespace string
}

func newInflight(max, maxPerNamespace int) *inflight {
	return &inflight{
		max: max, maxPerNamespace: maxPerNamespace,
		byNamespace: make(map[string]int),
		refused:     make(map[string]int),
	}
}

// weight returns how many requests one of op counts as: a list an eighth
// of the bound per namespace (listsPerNamespace), at least 1; any other 1.
func (f *inflight) weight(op string) int {
	if op == protocol.OpList {
		return max(1, f.maxPerNamespace/listsPerNamespace)
	}
	return 1
}

// admit counts a request of op for namespace ns in flight and returns its
// weight, for done, and no reason; or, if that would pass a bound, counts
// nothing and returns the reason (metrics.RefusedAgent or
// metrics.RefusedNamespace). If the refusals are due to be logged, it
// returns them (and starts counting afresh); otherwise log is nil.
func (f *inflight) admit(op, ns string) (weight int, reason string, log *refusals) {
	weight = f.weight(op)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.byNamespace[ns]+weight > f.maxPerNamespace: // the namespace's own doing, if both
		reason = metrics.RefusedNamespace
		f.namespace = ns
	case f.total+weight > f.max:
		reason = metrics.RefusedAgent
	default:
		f.total += weight
		f.byNamespace[ns] += weight
		return weight, "", nil
	}
	f.refused[reason]++
	if now := time.Now(); now.Sub(f.logged) >= refusalLogEvery {
		log = &refusals{byReason: f.refused, namespace: f.namespace}
		f.refused, f.namespace, f.logged = make(map[string]int), "", now
	}
	return 0, reason, log
}

// done counts a request of ns that admit admitted with weight as answered.
func (f *inflight) done(ns string, weight int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.total -= weight
	if f.byNamespace[ns] -= weight; f.byNamespace[ns] == 0 {
		delete(f.byNamespace, ns)
	}
}

// admit counts req, of op, in flight, or returns the error that refuses
// it: the agent, or its namespace, has as many requests in flight as it
// may. A refused request was not acted on (protocol.ErrRefused); the
// caller may send it again.
func (s *Service) admit(op string, req *request) error {
	weight, reason, log := s.limits.admit(op, req.namespace)
	if reason == "" {
		req.weight = weight
		return nil
	}
	s.cfg.Metrics.Refused(reason, req.namespace)
	if log != nil {
		s.cfg.Logger.Warn("refusing requests: too many in flight; the callers are told to retry (logged at most every "+refusalLogEvery.String()+")",
			"refused_agent", log.byReason[metrics.RefusedAgent], "max_requests_inflight", s.cfg.MaxRequestsInflight,
			"refused_namespace", log.byReason[metrics.RefusedNamespace], "max_namespace_requests_inflight", s.cfg.MaxNamespaceRequestsInflight,
			"namespace", log.namespace)
	}
	lists := s.limits.weight(protocol.OpList)
	if reason == metrics.RefusedAgent {
		return protocol.Refused(fmt.Errorf("%w: the agent has too many requests in flight (MaxRequestsInflight %d, a list counting as %d); nothing was done; retry with backoff",
			protocol.ErrUnavailable, s.cfg.MaxRequestsInflight, lists))
	}
	return protocol.Refused(fmt.Errorf("%w: namespace %q has too many requests in flight (MaxNamespaceRequestsInflight %d, a list counting as %d); nothing was done; retry with backoff",
		protocol.ErrUnavailable, req.namespace, s.cfg.MaxNamespaceRequestsInflight, lists))
}
