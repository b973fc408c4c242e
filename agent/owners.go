package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/clock"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// OwnersNamespace is the namespace of the bucket that holds the ownership
// leases: lease <namespace>, holder <agent ID>. Requests for it are refused.
const OwnersNamespace = "_owners"

// Defaults of Ownership.
const (
	DefaultOwnershipDuration = 10 * time.Second
	// MinOwnershipDuration is the shortest Ownership.Duration: an owner
	// renews every third of it, and each renewal is a store write that
	// must land well within that (several milliseconds on a cluster).
	MinOwnershipDuration = 100 * time.Millisecond
	// DefaultClockDriftRate is the margin for clock rates: an owner stops
	// serving at 99% of its ownership's duration, others take over at 101%.
	DefaultClockDriftRate = 0.01
)

// Ownership makes agents that share a bucket share its namespaces: each
// namespace is served by one agent at a time, its owner.
//
// Ownership of a namespace is a lease in OwnersNamespace, held by the
// owner's AgentID for Duration and renewed every Renew. An owner answers
// for a namespace only until its last successful renewal started plus
// Duration*(1-ClockDriftRate); after that it stops its namespace actor. Any
// other agent takes the namespace over only once the ownership lease has
// expired by the clock rule (Duration*(1+ClockDriftRate) after it first
// saw the lease's latest revision), and loads the namespace from the
// store. So two agents never answer for one namespace at once, as long as
// their clocks' rates differ by less than ClockDriftRate.
type Ownership struct {
	// AgentID names this agent among those sharing the bucket: the holder
	// of its ownership leases, and a token of the subject requests are
	// forwarded to it on. Letters, digits, '-' and '_', at most 64;
	// required. Two live agents must never share one: Start refuses to
	// start if another agent answers to it.
	AgentID string
	// Duration is how long an ownership lease lasts, so how long a
	// namespace may go unserved after its owner dies;
	// DefaultOwnershipDuration if zero.
	Duration time.Duration
	// Renew is how often an owner renews its ownership leases, and how
	// often agents look for namespaces whose owner has gone; Duration/3
	// if zero. It must be less than half of Duration.
	Renew time.Duration
	// ClockDriftRate is how much the clock rates of two agents may differ,
	// as a fraction; DefaultClockDriftRate if zero.
	ClockDriftRate float64
}

var agentIDPattern = regexp.MustCompile(`^[-_a-zA-Z0-9]{1,64}$`)

// Validate returns an error naming the first field that is not valid.
func (o Ownership) Validate() error {
	d := cmpOr(o.Duration, DefaultOwnershipDuration)
	switch {
	case !agentIDPattern.MatchString(o.AgentID):
		return fmt.Errorf("agent: Ownership.AgentID: %q is not 1-64 letters, digits, '-' or '_'", o.AgentID)
	case o.Duration < 0:
		return fmt.Errorf("agent: Ownership.Duration: %v is negative", o.Duration)
	case o.Duration > 0 && o.Duration < MinOwnershipDuration:
		return fmt.Errorf("agent: Ownership.Duration: %v is below the minimum %v: renewals every third of it must reach the store in time", o.Duration, MinOwnershipDuration)
	case o.Renew < 0:
		return fmt.Errorf("agent: Ownership.Renew: %v is negative", o.Renew)
	case o.Renew > 0 && 2*o.Renew >= d:
		return fmt.Errorf("agent: Ownership.Renew: %v is not less than half of the ownership duration %v", o.Renew, d)
	case o.ClockDriftRate < 0 || o.ClockDriftRate >= 0.5:
		return fmt.Errorf("agent: Ownership.ClockDriftRate: %v is not in [0, 0.5)", o.ClockDriftRate)
	}
	return nil
}

func (o Ownership) withDefaults() Ownership {
	o.Duration = cmpOr(o.Duration, DefaultOwnershipDuration)
	o.Renew = cmpOr(o.Renew, o.Duration/3)
	if o.ClockDriftRate == 0 {
		o.ClockDriftRate = DefaultClockDriftRate
	}
	return o
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// tenure is this agent's ownership of one namespace.
type tenure struct {
	id       uint64    // distinguishes tenures of one namespace
	until    time.Time // when it stops answering unless renewed
	lastUsed time.Time // when a request last came for it
}

// route says who answers a request for a namespace.
type route struct {
	local  bool   // this agent, in tenure tenureID
	tenure uint64 // valid if local
	owner  string // the owner's agent ID, if not local
}

// owners keeps this agent's ownership leases and its view of the others'.
// Its methods are safe for concurrent use.
type owners struct {
	cfg    Ownership
	mgr    *actors.Manager
	clock  clock.Clock
	log    *slog.Logger
	margin time.Duration // Duration*ClockDriftRate

	mu          sync.Mutex
	store       *natskv.Client // the ownership leases; guarded by mu
	owned       map[string]*tenure
	busy        map[string]chan struct{} // namespaces with a write in flight
	lastTenure  uint64
	closed      bool      // releaseAll has begun: take nothing more
	lastRefresh time.Time // real time of the last refresh, for refreshSoon
}

func newOwners(cfg Ownership, mgr *actors.Manager, log *slog.Logger) (*owners, error) {
	cfg = cfg.withDefaults()
	store, err := natskv.NewClient(natskv.Config{
		Bucket:         mgr.Bucket(),
		Namespace:      OwnersNamespace,
		Clock:          mgr.Clock(),
		WriterID:       cfg.AgentID,
		ClockDriftRate: cfg.ClockDriftRate,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: ownership: %w", err)
	}
	return &owners{
		cfg:    cfg,
		mgr:    mgr,
		clock:  mgr.Clock(),
		log:    log,
		margin: time.Duration(float64(cfg.Duration) * cfg.ClockDriftRate),
		store:  store,
		owned:  make(map[string]*tenure),
		busy:   make(map[string]chan struct{}),
	}, nil
}

// maxRouteAttempts bounds how many ownership writes one request may make
// before it is told to retry.
const maxRouteAttempts = 4

// ownedNow reports whether this agent owns ns now, and in which tenure;
// unlike route, it never waits and never takes ownership.
func (o *owners) ownedNow(ns string) (tenure uint64, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.clock.Now()
	t, ok := o.owned[ns]
	if o.closed || !ok || !now.Before(t.until) {
		return 0, false
	}
	t.lastUsed = now
	return t.id, true
}

// mayWrite reports whether this agent's tenure of ns runs now; the Manager
// asks it before each store write (actors.Manager.SetWriteGuard).
func (o *owners) mayWrite(ns string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	t, ok := o.owned[ns]
	return !o.closed && ok && o.clock.Now().Before(t.until)
}

// route returns who answers for ns now, taking ownership of it if nobody
// holds it (or its owner's lease has expired). Its "unavailable" errors
// are refusals (protocol.ErrRefused): a request is routed before it
// reaches the Manager, so nothing of it was done.
func (o *owners) route(ctx context.Context, ns string) (route, error) {
	r, err := o.findRoute(ctx, ns)
	if errors.Is(err, protocol.ErrUnavailable) {
		err = protocol.Refused(err)
	}
	return r, err
}

func (o *owners) findRoute(ctx context.Context, ns string) (route, error) {
	for attempt := 0; attempt < maxRouteAttempts; attempt++ {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return route{}, fmt.Errorf("%w: this agent is stopping; retry", protocol.ErrUnavailable)
		}
		now := o.clock.Now()
		if t, ok := o.owned[ns]; ok && now.Before(t.until) {
			t.lastUsed = now
			o.mu.Unlock()
			return route{local: true, tenure: t.id}, nil
		}
		if ch, ok := o.busy[ns]; ok {
			o.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return route{}, ctx.Err()
			}
		}
		holder, expiry, held := o.store.Holder(ns)
		if held && holder != o.cfg.AgentID && now.Before(expiry) {
			o.mu.Unlock()
			return route{owner: holder}, nil
		}
		// A namespace the Manager has no room for gets no ownership write:
		// a flood of new names would cost a store write each, past the
		// limit that is there to bound what they cost.
		if err := o.mgr.Namespace(ns).Full(); err != nil {
			o.mu.Unlock()
			return route{}, err
		}
		w, err := o.prepare(ns, holder, held)
		if err != nil {
			o.mu.Unlock()
			if errors.Is(err, lease.ErrInvalid) {
				continue // the cache changed under us; decide again
			}
			return route{}, err
		}
		_, err = o.write(ctx, ns, w, now)
		if err != nil && !errors.Is(err, lease.ErrInvalid) {
			return route{}, err
		}
		// Won, lost or expired someone else's: decide again from the
		// cache, which now holds the latest.
	}
	return route{}, fmt.Errorf("%w: namespace %q: its ownership is changing hands; retry", protocol.ErrUnavailable, ns)
}

// prepare returns the write that takes ns (or, if its ownership lease has
// expired, removes that first). o.mu is held.
func (o *owners) prepare(ns, holder string, held bool) (*natskv.Write, error) {
	req := lease.Request{Holder: o.cfg.AgentID, Duration: o.cfg.Duration}
	switch {
	case held && holder == o.cfg.AgentID:
		// Ours, but lapsed (or left by an earlier run of this agent):
		// a write at its revision takes it back if nobody else has. It
		// must write: other agents saw the old revision and may take
		// the namespace when it expires by their clocks.
		return o.store.PrepareRenew(ns, req)
	case held:
		return o.store.PrepareExpire(ns)
	default:
		return o.store.PrepareClaim(ns, req)
	}
}

// write runs an ownership write for ns prepared at start, with o.mu held on
// entry; it releases o.mu while the write runs and returns without it. On
// success it records the tenure. It reports whether a new tenure began.
func (o *owners) write(ctx context.Context, ns string, w *natskv.Write, start time.Time) (bool, error) {
	done := make(chan struct{})
	o.busy[ns] = done
	o.mu.Unlock()
	w.Run(ctx)
	o.mu.Lock()
	err := o.store.Apply(w)
	if err != nil || w.Deletes() {
		delete(o.busy, ns)
		close(done)
		if err != nil && !errors.Is(err, lease.ErrInvalid) {
			err = fmt.Errorf("%w: namespace %q: ownership: %w", protocol.ErrUnavailable, ns, err)
		}
		o.mu.Unlock()
		return false, err
	}
	until := start.Add(o.cfg.Duration - o.margin)
	if t, ok := o.owned[ns]; ok && o.clock.Now().Before(t.until) {
		t.until = until // renewed in time: the same tenure goes on
		delete(o.busy, ns)
		close(done)
		o.mu.Unlock()
		return false, nil
	}
	// A new tenure. Whatever this agent knew of ns from an earlier one may
	// be stale: unload it before anyone is told this agent answers (the
	// namespace stays busy meanwhile).
	o.mu.Unlock()
	uerr := o.mgr.Unload(ctx, ns)
	o.mu.Lock()
	delete(o.busy, ns)
	close(done)
	if uerr != nil {
		o.mu.Unlock()
		return false, fmt.Errorf("%w: namespace %q: %w", protocol.ErrUnavailable, ns, uerr)
	}
	o.lastTenure++
	o.owned[ns] = &tenure{id: o.lastTenure, until: until, lastUsed: start}
	o.mu.Unlock()
	o.log.Info("owning namespace", "namespace", ns)
	return true, nil
}

// holds reports whether this agent still owns ns in the tenure given.
func (o *owners) holds(ns string, id uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	t, ok := o.owned[ns]
	return ok && t.id == id && o.clock.Now().Before(t.until)
}

// run renews this agent's ownership leases, lets go of those it could not
// renew in time and of idle namespaces, and takes over namespaces whose
// owner has gone, every Renew, until ctx ends.
func (o *owners) run(ctx context.Context) {
	for {
		o.round(ctx)
		if !o.sleep(ctx) {
			return
		}
	}
}

// sleep waits until the next round, or until the earliest of this agent's
// tenures runs out or another agent's ownership lease expires, if that is
// sooner, and reports whether ctx is still going.
func (o *owners) sleep(ctx context.Context) bool {
	d := o.cfg.Renew
	o.mu.Lock()
	now := o.clock.Now()
	for _, t := range o.owned {
		d = min(d, max(0, t.until.Sub(now)))
	}
	for _, info := range o.store.Leases() {
		if info.Holder != o.cfg.AgentID && info.Expiry.After(now) {
			d = min(d, info.Expiry.Sub(now))
		}
	}
	o.mu.Unlock()
	wake := make(chan struct{})
	timer := o.clock.AfterFunc(d, func() { close(wake) })
	defer timer.Stop()
	select {
	case <-wake:
		return true
	case <-ctx.Done():
		return false
	}
}

// round is one pass of run.
func (o *owners) round(ctx context.Context) {
	o.dropLapsed(ctx)
	o.renew(ctx)
	o.takeOver(ctx)
}

// dropLapsed stops serving the namespaces whose tenure has run out.
func (o *owners) dropLapsed(ctx context.Context) {
	o.mu.Lock()
	now := o.clock.Now()
	var lapsed []string
	for ns, t := range o.owned {
		if !now.Before(t.until) {
			delete(o.owned, ns)
			lapsed = append(lapsed, ns)
		}
	}
	o.mu.Unlock()
	for _, ns := range lapsed {
		o.log.Warn("ownership lapsed: could not renew it in time; stopped serving the namespace", "namespace", ns)
		_ = o.mgr.Unload(ctx, ns)
	}
}

// renew renews every tenure, or releases it if its namespace has been idle
// (no actor, no request) for a whole round. The writes run together.
func (o *owners) renew(ctx context.Context) {
	o.mu.Lock()
	now := o.clock.Now()
	var names []string
	for ns := range o.owned {
		if _, busy := o.busy[ns]; !busy {
			names = append(names, ns)
		}
	}
	o.mu.Unlock()
	var wg sync.WaitGroup
	for _, ns := range names {
		wg.Go(func() { o.renewOne(ctx, ns, now) })
	}
	wg.Wait()
}

func (o *owners) renewOne(ctx context.Context, ns string, roundStart time.Time) {
	o.mu.Lock()
	t, ok := o.owned[ns]
	if _, busy := o.busy[ns]; !ok || busy {
		o.mu.Unlock()
		return
	}
	idle := !o.mgr.Serving(ns) && t.lastUsed.Add(o.cfg.Renew).Before(roundStart)
	var (
		w   *natskv.Write
		err error
	)
	start := o.clock.Now()
	if idle {
		// Stop answering first, then give the lease up: a request that
		// comes meanwhile takes it again, or is told to retry.
		delete(o.owned, ns)
		w, err = o.store.PrepareRelease(ns, o.cfg.AgentID)
	} else {
		// Always a new revision: that is what tells the others we live.
		w, err = o.store.PrepareRenew(ns, lease.Request{Holder: o.cfg.AgentID, Duration: o.cfg.Duration})
	}
	if err != nil {
		delete(o.owned, ns)
		o.mu.Unlock()
		o.log.Warn("ownership lost", "namespace", ns, "error", err)
		_ = o.mgr.Unload(ctx, ns)
		return
	}
	_, err = o.write(ctx, ns, w, start)
	switch {
	case idle:
		if err != nil {
			o.log.Debug("release ownership of an idle namespace", "namespace", ns, "error", err)
		}
	case errors.Is(err, lease.ErrInvalid):
		o.mu.Lock()
		delete(o.owned, ns)
		o.mu.Unlock()
		o.log.Warn("ownership lost: another agent holds it", "namespace", ns, "error", err)
		_ = o.mgr.Unload(ctx, ns)
	case err != nil:
		o.log.Warn("renew ownership", "namespace", ns, "error", err)
	}
}

// refresh reads every ownership lease: those it had not seen, or whose
// revision changed, expire by the clock rule from now.
func (o *owners) refresh(ctx context.Context) error {
	snap, err := o.store.Load(ctx)
	if err != nil {
		return fmt.Errorf("agent: read the ownership leases: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lastRefresh = time.Now()
	if err := o.store.ApplySnapshot(snap); err != nil {
		return fmt.Errorf("agent: read the ownership leases: %w", err)
	}
	return nil
}

// minRefreshGap is how often, at most, refreshSoon reads the ownership
// leases.
const minRefreshGap = 100 * time.Millisecond

// refreshSoon reads the ownership leases again unless that was done less
// than minRefreshGap ago. A forward that found no responders calls it: the
// owner may have released its namespaces on its way out, and the retry
// should find that out before the next round. (Seeing a revision again
// keeps the time it was first seen: the clock rule is not reset.)
func (o *owners) refreshSoon(ctx context.Context) {
	o.mu.Lock()
	recent := time.Since(o.lastRefresh) < minRefreshGap
	o.mu.Unlock()
	if recent {
		return
	}
	if err := o.refresh(ctx); err != nil {
		o.log.Debug("read the ownership leases after a forward found no responders", "error", err)
	}
}

// takeOver reads every ownership lease and takes the namespaces whose
// owner's lease has expired by the clock rule, and those an earlier run of
// this agent owned (at once: no other agent runs with its ID): their
// leases must still be expired on time and their waiters woken, even if no
// request comes.
func (o *owners) takeOver(ctx context.Context) {
	if err := o.refresh(ctx); err != nil {
		o.log.Warn("look for namespaces whose owner has gone", "error", err)
		return
	}
	o.mu.Lock()
	now := o.clock.Now()
	var orphans []string
	for ns, info := range o.store.Leases() {
		_, mine := o.owned[ns]
		if !mine && (info.Holder == o.cfg.AgentID || !now.Before(info.Expiry)) {
			orphans = append(orphans, ns)
		}
	}
	o.mu.Unlock()
	slices.Sort(orphans)
	for _, ns := range orphans {
		r, err := o.route(ctx, ns)
		if err != nil || !r.local {
			continue // another agent was quicker
		}
		// Start its actor: it loads the namespace and expires what is due.
		if _, err := o.mgr.Namespace(ns).Leases(ctx); err != nil {
			o.log.Warn("take over namespace", "namespace", ns, "error", err)
			continue
		}
		o.log.Info("took over namespace from a departed agent", "namespace", ns)
	}
}

// releaseAll gives up every ownership lease, so that other agents take the
// namespaces over at once instead of after Duration. The caller has
// stopped answering requests.
func (o *owners) releaseAll(ctx context.Context) {
	o.mu.Lock()
	o.closed = true
	var names []string
	for ns := range o.owned {
		names = append(names, ns)
	}
	o.owned = make(map[string]*tenure)
	o.mu.Unlock()
	var wg sync.WaitGroup
	for _, ns := range names {
		wg.Go(func() {
			o.mu.Lock()
			if _, busy := o.busy[ns]; busy {
				o.mu.Unlock()
				return
			}
			w, err := o.store.PrepareRelease(ns, o.cfg.AgentID)
			if err != nil {
				o.mu.Unlock()
				return
			}
			if _, err := o.write(ctx, ns, w, o.clock.Now()); err != nil {
				o.log.Debug("release ownership", "namespace", ns, "error", err)
			}
		})
	}
	wg.Wait()
}

// ownedNamespaces returns the namespaces this agent owns now, sorted.
func (o *owners) ownedNamespaces() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.clock.Now()
	var names []string
	for ns, t := range o.owned {
		if now.Before(t.until) {
			names = append(names, ns)
		}
	}
	slices.Sort(names)
	return names
}
