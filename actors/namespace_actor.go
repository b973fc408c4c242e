package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/clock"
	"github.com/leaseagent/lease/metrics"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// Requests a namespace actor serves. Each carries a buffered reply channel
// or an answer that the actor answers once, without blocking.
type (
	claimRequest struct {
		lease, holder string
		duration      time.Duration
		reply         *answer[opResult]
	}
	checkRequest struct {
		lease, holder string
		refreshed     bool // a miss has already been refreshed once
		reply         *answer[checkResult]
	}
	checkResult struct {
		info lease.Info
		err  error
	}
	// opResult is how a claim or a release ended; for a claim that
	// succeeded, with the fencing token of the holder's tenure.
	opResult struct {
		fence uint64
		err   error
	}
	releaseRequest struct {
		lease, holder string
		reply         *answer[opResult]
	}
	leasesRequest struct {
		reply chan leasesResult
	}
	leasesPageRequest struct {
		after string
		limit int
		reply chan leasesPageResult
	}
	leasesPageResult struct {
		leases []natskv.Held
		more   bool
		err    error
	}
	leaseRequest struct {
		lease string
		reply chan leaseResult
	}
	leaseResult struct {
		info lease.Info
		held bool
		err  error
	}
	leasesResult struct {
		leases map[string]lease.Info
		err    error
	}
	waitRequest struct {
		lease  string
		waiter *waiter
	}
	// cancelWait withdraws a waiter whose caller has given up.
	cancelWait struct {
		lease  string
		waiter *waiter
	}
	// unloading comes from the manager just before it stops the actor
	// for good (Manager.Unload, or too many failures): the calls still
	// pending then fail with err, and may be retried.
	unloading struct{ err error }
)

// waiter is one WaitUntilExpired call.
type waiter struct{ reply chan error }

// Messages a namespace actor sends itself.
type (
	// writeDone carries a store write that has run.
	writeDone struct {
		incarnation uint64
		op          *op
		write       *natskv.Write
	}
	// roundDone carries a round of store writes that have run.
	roundDone struct {
		incarnation, round uint64
		writes             []pendingWrite
	}
	// roundSlow says a round has been in flight for maxRoundWait.
	roundSlow struct {
		incarnation, round uint64
	}
	// lingered ends the wait for the writers of a batch to come back.
	lingered struct {
		incarnation, generation uint64
	}
	// loaded carries a snapshot of the namespace read from the store.
	loaded struct {
		incarnation uint64
		snapshot    *natskv.Snapshot
		err         error
	}
	// tick is the expiry timer firing.
	tick struct {
		incarnation, generation uint64
	}
)

// opKind is what an op does to its lease.
type opKind int

const (
	opClaim opKind = iota
	opRelease
	opExpire
)

// op is a change to one lease. The ops of a lease run one at a time, in
// order of arrival; an op may take several store writes (expire an expired
// holder, then claim; decide again after a lost race).
type op struct {
	kind          opKind
	lease, holder string
	duration      time.Duration
	reply         *answer[opResult] // nil for ops the actor starts itself
	lostRaces     int
	finished      bool
	granted       bool // a claim made the holder the holder (not an extension)
}

// pendingWrite is an op's next store write, decided and not yet applied.
type pendingWrite struct {
	op    *op
	write *natskv.Write
}

// namespaceShared is what a namespace keeps across restarts of its actor:
// the store and its cache, which a panic in the actor does not corrupt.
type namespaceShared struct {
	name         string
	store        store
	incarnations uint64
	// unloading is why the manager will stop the actor for good (the
	// unloading message): the error its last requests fail with.
	unloading error
}

// namespaceActor owns the leases of one namespace: it decides claims from
// its store's cache, keeps writes for different leases in flight together,
// expires leases on time, wakes waiters and publishes events.
type namespaceActor struct {
	rt          *runtime
	parent      *actor.PID
	lastActive  time.Time // when the last request arrived
	passivating bool      // it told the manager it is idle
	shared      *namespaceShared
	name        string
	store       store
	clock       clock.Clock
	log         *slog.Logger
	self        *actor.PID
	incarnation uint64

	ready   bool  // the first snapshot is installed
	early   []any // requests that arrived before it
	current any   // the message being handled, failed if it crashes the actor

	ops      map[string][]*op // per lease: the running op first, then the queue
	inFlight map[uint64]bool  // the rounds of writes in flight (group commit), by number
	rounds   uint64           // rounds sent so far
	slow     bool             // the newest round has taken maxRoundWait: the next write goes out beside it
	pending  []pendingWrite   // writes decided since, for the next round
	// After a batch lands, the next round waits (lingers) a moment for its
	// writers' next writes, up to as many as it had.
	lingering bool
	lingerFor int // the size of the batch that landed
	lingerGen uint64
	heldCount int // leases held, for the metrics
	waiters   map[string]map[*waiter]struct{}

	loading    bool // a Load is in flight
	reload     bool // another Load is wanted once it lands
	reloadFull bool // and it must read the whole namespace
	// fullLoadDue is when the next full Load is due: MaxSleep after the
	// last one started. Other reloads read only the changes.
	fullLoadDue time.Time
	afterLoad   []*checkRequest // checks waiting for the Load in flight
	nextLoad    []*checkRequest // checks waiting for the one after
	checking    []*checkRequest // checks of the Load that landed, still to answer

	expiring []string // due leases still to expire, in name order
	// gathering collects the writes submitted meanwhile into gathered,
	// to go out as one round: expireAll's batch without group commit.
	gathering bool
	gathered  []pendingWrite
	expiries  int  // expiries running; the timer is set again when the last ends
	expired   bool // the batch running started an expiry
	lostRace  bool // and one of its expiries lost to another writer

	timer      clock.Timer
	generation uint64
	timerAt    time.Time

	// Event subjects up to the lease name, and the payload buffer.
	expiredSubject, claimedSubject string
	eventBuf                       []byte
}

func newNamespaceActor(rt *runtime, shared *namespaceShared) *namespaceActor {
	shared.incarnations++
	return &namespaceActor{
		rt:          rt,
		shared:      shared,
		name:        shared.name,
		store:       shared.store,
		clock:       rt.cfg.Clock,
		log:         rt.cfg.Logger.With("namespace", shared.name),
		incarnation: shared.incarnations,
		ops:         make(map[string][]*op),
		inFlight:    make(map[uint64]bool),
		waiters:     make(map[string]map[*waiter]struct{}),

		expiredSubject: protocol.EventSubject(rt.cfg.Prefix, protocol.EventExpired, shared.name, ""),
		claimedSubject: protocol.EventSubject(rt.cfg.Prefix, protocol.EventClaimed, shared.name, ""),
	}
}

// Receive is the actor's message handler. It never blocks: store reads and
// writes run on their own goroutines and come back as messages.
func (a *namespaceActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.self, a.parent = ctx.Self(), ctx.Parent()
		a.lastActive = a.clock.Now()
		// A restarted actor has its predecessor's store: outcomes of the
		// writes that were in flight may come back before its first load.
		a.heldCount = a.store.Count()
		a.load(true)
	case *actor.Restarting:
		a.rt.cfg.Metrics.ActorRestart(a.name)
		a.log.Error("namespace actor restarting after a failure")
		a.stopTimer()
		a.failAll(fmt.Errorf("%w: namespace %q restarted after a failure", ErrUnavailable, a.name))
	case *actor.Stopping:
		a.stopTimer()
		switch {
		case a.passivating:
			// Only this namespace stops; a retry starts it again.
			a.failAll(fmt.Errorf("%w: namespace %q stopped while idle; try again", ErrUnavailable, a.name))
		case a.shared.unloading != nil:
			a.failAll(a.shared.unloading)
		default:
			a.failAll(ErrStopped)
		}
		// Its leases are no longer held as this agent knows them (another
		// agent may serve them now), unless a new actor already serves the
		// namespace here and keeps the gauge itself.
		if _, served := a.rt.namespaces.Load(a.name); !served {
			a.rt.cfg.Metrics.LeasesHeld(a.name, 0)
		}
		if h := a.rt.cfg.hooks.stopped; h != nil {
			h(a.name)
		}
	case actor.AutoReceiveMessage, actor.SystemMessage:
	default:
		defer a.logPanic()
		a.current = msg
		if h := a.rt.cfg.hooks.receive; h != nil {
			h(a.name, msg)
		}
		a.receive(msg)
		a.current = nil
	}
}

// logPanic, deferred, logs a panic of the actor with its stack and panics
// again, for Proto.Actor to restart the actor. (Proto.Actor logs the panic
// only at info, which the manager does not pass on.)
func (a *namespaceActor) logPanic() {
	if r := recover(); r != nil {
		a.log.Error("namespace actor panicked", "panic", fmt.Sprint(r), "message", fmt.Sprintf("%T", a.current), "stack", string(debug.Stack()))
		panic(r)
	}
}

func (a *namespaceActor) receive(msg any) {
	switch m := msg.(type) {
	case *loaded:
		a.onLoaded(m)
	case *roundDone:
		a.onRoundDone(m)
	case *roundSlow:
		if m.incarnation == a.incarnation && a.inFlight[m.round] {
			a.slow = true
			a.flush()
		}
	case *lingered:
		if m.incarnation == a.incarnation && m.generation == a.lingerGen && a.lingering {
			a.lingering = false
			a.flush()
		}
	case *tick:
		a.onTick(m)
	case *cancelWait:
		delete(a.waiters[m.lease], m.waiter)
	case *unloading:
		a.shared.unloading = m.err
	default:
		if !a.ready {
			a.early = append(a.early, msg)
		} else {
			a.handle(msg)
		}
	}
}

// handle serves a request once the namespace is loaded.
func (a *namespaceActor) handle(msg any) {
	a.lastActive = a.clock.Now()
	switch m := msg.(type) {
	case *claimRequest:
		a.enqueue(&op{kind: opClaim, lease: m.lease, holder: m.holder, duration: m.duration, reply: m.reply})
	case *releaseRequest:
		a.enqueue(&op{kind: opRelease, lease: m.lease, holder: m.holder, reply: m.reply})
	case *checkRequest:
		a.check(m)
	case *waitRequest:
		if !a.held(m.lease) {
			m.waiter.reply <- nil
			return
		}
		if a.waiters[m.lease] == nil {
			a.waiters[m.lease] = make(map[*waiter]struct{})
		}
		a.waiters[m.lease][m.waiter] = struct{}{}
	case *leasesRequest:
		m.reply <- leasesResult{leases: a.heldLeases()}
	case *leasesPageRequest:
		leases, more := a.heldPage(m.after, m.limit)
		m.reply <- leasesPageResult{leases: leases, more: more}
	case *leaseRequest:
		info, _ := a.store.Lease(m.lease)
		m.reply <- leaseResult{info: info, held: a.held(m.lease)}
	default:
		a.log.Error("unknown message", "type", fmt.Sprintf("%T", msg))
	}
}

// held reports whether a lease is held now: in the cache, and not past its
// expiry (a lease past expiry is free, even before it has been removed).
func (a *namespaceActor) held(name string) bool {
	_, expiry, ok := a.store.Holder(name)
	return ok && !a.clock.Now().After(expiry)
}

// heldLeases returns the leases held now: those past their expiry are
// free, as held says, even before their removal reaches the store (it may
// be in flight, or failing while the store is unreachable).
func (a *namespaceActor) heldLeases() map[string]lease.Info {
	leases := a.store.Leases()
	now := a.clock.Now()
	for name, info := range leases {
		if now.After(info.Expiry) {
			delete(leases, name)
		}
	}
	return leases
}

// heldPage returns at most limit of the leases held now named after after,
// in name order, and whether more follow: like heldLeases, it skips those
// past their expiry.
func (a *namespaceActor) heldPage(after string, limit int) (page []natskv.Held, more bool) {
	now := a.clock.Now()
	page = make([]natskv.Held, 0, min(limit, a.store.Count()))
	for l := range a.store.LeasesAfter(after) {
		switch {
		case now.After(l.Expiry):
		case len(page) == limit:
			return page, true
		default:
			page = append(page, l)
		}
	}
	return page, false
}

// check answers from the cache; on a miss it reloads once and looks again.
func (a *namespaceActor) check(m *checkRequest) {
	holder, expiry, ok := a.store.Holder(m.lease)
	if ok && holder == m.holder && !a.clock.Now().After(expiry) {
		info, _ := a.store.Lease(m.lease)
		m.reply.send(checkResult{info: info})
		return
	}
	if m.refreshed {
		m.reply.send(checkResult{err: fmt.Errorf("%w: %q does not hold %q in namespace %q", lease.ErrNotHeld, m.holder, m.lease, a.name)})
		return
	}
	m.refreshed = true
	a.loadFor(m)
}

// enqueue adds an op behind the others of its lease, starting it if none
// is running.
func (a *namespaceActor) enqueue(o *op) {
	a.ops[o.lease] = append(a.ops[o.lease], o)
	if len(a.ops[o.lease]) == 1 {
		a.step(o)
	}
}

// step decides an op's next write from the cache, or finishes it.
func (a *namespaceActor) step(o *op) {
	var (
		w   *natskv.Write
		err error
	)
	switch o.kind {
	case opClaim:
		w, err = a.claimWrite(o)
	case opRelease:
		w, err = a.store.PrepareRelease(o.lease, o.holder)
		if errors.Is(err, lease.ErrInvalid) {
			err = fmt.Errorf("%w: %q does not hold %q in namespace %q", lease.ErrNotHeld, o.holder, o.lease, a.name)
		}
	case opExpire:
		w, err = a.store.PrepareExpire(o.lease)
		if errors.Is(err, lease.ErrInvalid) {
			err = nil // extended or gone since it was found due
		}
	}
	switch {
	case err != nil || w == nil || w.NoOp():
		a.finish(o, err)
	case !a.rt.writable(a.name):
		// Asked even of an extension kept in the cache: it promises the
		// holder time that a new owner, which counts from its own load,
		// would not honour.
		a.finish(o, fmt.Errorf("%w: namespace %q may no longer be written from here", ErrUnavailable, a.name))
	case w.Local():
		w.Run(a.rt.ctx) // no I/O
		a.onWriteDone(&writeDone{incarnation: a.incarnation, op: o, write: w})
	default:
		a.submit(pendingWrite{op: o, write: w})
	}
}

// submit sends a write to the store. With group commit it goes at once if
// no round is in flight, and otherwise waits for the next round. An op has
// at most one write pending or in flight, so a round holds at most one
// write per lease.
func (a *namespaceActor) submit(p pendingWrite) {
	if a.gathering {
		a.gathered = append(a.gathered, p)
		return
	}
	if a.rt.cfg.MinBatch <= 0 {
		a.send(0, []pendingWrite{p})
		return
	}
	a.pending = append(a.pending, p)
	switch {
	case a.slow:
		a.flush()
	case len(a.inFlight) > 0:
	case !a.lingering:
		a.flush()
	case len(a.pending) >= a.lingerFor:
		a.lingering = false
		a.flush()
	}
}

// flush sends the pending writes as a round, at most natskv.MaxBatch of
// them; the rest wait for the next.
func (a *namespaceActor) flush() {
	if len(a.pending) == 0 {
		return
	}
	round := a.pending
	if len(round) > natskv.MaxBatch {
		round = round[:natskv.MaxBatch:natskv.MaxBatch]
		a.pending = slices.Clone(a.pending[natskv.MaxBatch:])
	} else {
		a.pending = nil
	}
	a.rounds++
	a.inFlight[a.rounds] = true
	// The writes decided from now on wait for this round, or go out
	// beside it once it has taken maxRoundWait: each stuck round lets one
	// more round out, not every write one of its own (with fsync, one
	// fsync each: under load the single writes fell further behind, the
	// stuck rounds never all landed, and 10k expiries came seconds late).
	a.slow = false
	a.send(a.rounds, round)
	// A stuck round must not hold up the writes of other leases for
	// long: after maxRoundWait they go out beside it.
	msg := &roundSlow{incarnation: a.incarnation, round: a.rounds}
	self, root := a.self, a.rt.system.Root
	wait := maxRoundWait
	if h := a.rt.cfg.hooks.maxRoundWait; h > 0 {
		wait = h
	}
	time.AfterFunc(wait, func() { root.Send(self, msg) })
}

// maxRoundWait is how long writes wait, at most, for the round in flight
// before they go out beside it: far longer than a round takes (a few
// milliseconds with fsync), so only a stuck write (a slow store, a lease
// whose write waits for a timeout) triggers it. Real time, like linger.
const maxRoundWait = 20 * time.Millisecond

// linger is how long, at most, the round after a batch waits for the
// batch's writers to come back with their next writes. Without it, the
// first of them would go out alone at once, the next ones as a small round
// behind it, and a steady load would settle into rounds too small to batch
// (measured: 15 single writes, then a batch of 17, again and again). A lone
// writer never lingers: only a batch that landed starts the wait.
const linger = time.Millisecond

// send runs a round of writes off the actor's goroutine; their outcomes
// come back in one message.
func (a *namespaceActor) send(id uint64, round []pendingWrite) {
	incarnation, self, rt, name := a.incarnation, a.self, a.rt, a.name
	rt.workers.Go(func() {
		ws := make([]*natskv.Write, len(round))
		for i, p := range round {
			ws[i] = p.write
		}
		rt.runWrites(name, ws)
		rt.system.Root.Send(self, &roundDone{incarnation: incarnation, round: id, writes: round})
	})
}

// onRoundDone applies a round's outcomes, then sends the writes decided
// meanwhile (retries and next steps of this round's ops included) as the
// next round.
func (a *namespaceActor) onRoundDone(m *roundDone) {
	for _, p := range m.writes {
		a.onWriteDone(&writeDone{incarnation: m.incarnation, op: p.op, write: p.write})
	}
	if m.incarnation != a.incarnation || a.rt.cfg.MinBatch <= 0 {
		return
	}
	delete(a.inFlight, m.round)
	if len(a.inFlight) == 0 {
		a.slow = false
	}
	n := len(m.writes)
	if n < a.rt.cfg.MinBatch || len(a.pending) >= n {
		a.flush()
		return
	}
	a.lingering, a.lingerFor = true, n
	a.lingerGen++
	msg := &lingered{incarnation: a.incarnation, generation: a.lingerGen}
	self, root := a.self, a.rt.system.Root
	// Real time, not the Manager's clock: this only shapes rounds, and a
	// test's fake clock must not hold writes back.
	time.AfterFunc(linger, func() { root.Send(self, msg) })
}

// claimWrite decides a claim: deny if another holder holds the lease,
// expire it first if its holder's time is up, extend for the holder,
// claim if free. A nil write with a nil error means done.
func (a *namespaceActor) claimWrite(o *op) (*natskv.Write, error) {
	req := lease.Request{Holder: o.holder, Duration: o.duration}
	holder, expiry, held := a.store.Holder(o.lease)
	switch {
	case !held:
		return a.store.PrepareClaim(o.lease, req)
	case holder == o.holder:
		return a.store.PrepareLocalExtend(o.lease, req)
	case a.clock.Now().After(expiry):
		return a.store.PrepareExpire(o.lease)
	}
	return nil, fmt.Errorf("%w: %q is held by %q in namespace %q", lease.ErrClaimDenied, o.lease, holder, a.name)
}

// onWriteDone applies a write's outcome and moves its op on.
func (a *namespaceActor) onWriteDone(m *writeDone) {
	w, o := m.write, m.op
	err := a.store.Apply(w)
	switch {
	case err == nil && w.Deletes():
		a.heldCount--
		if o.kind == opRelease {
			a.rt.cfg.Metrics.Released(a.name)
			a.logChange(slog.LevelInfo, "lease released", w, 0)
		} else {
			a.rt.cfg.Metrics.Expired(a.name)
			a.logChange(slog.LevelInfo, "lease expired", w, 0)
		}
		a.publishExpired(w.Lease(), w.Holder(), w.Fence())
		a.wake(w.Lease())
	case err == nil && w.Claims():
		a.heldCount++
		o.granted = true
		a.logChange(slog.LevelInfo, "lease claimed", w, o.duration)
		a.publishClaimed(w.Lease(), w.Holder(), w.Fence(), o.duration)
	case err == nil:
		a.logChange(slog.LevelDebug, "lease extended", w, o.duration)
	case errors.Is(err, lease.ErrInvalid):
		a.rt.cfg.Metrics.Conflict(a.name)
		a.heldCount = a.store.Count()
		a.wake(w.Lease()) // the store's latest may show the lease gone
	default:
		a.log.Warn("store write failed", "lease", w.Lease(), "holder", w.Holder(), "error", err)
	}
	a.rt.cfg.Metrics.LeasesHeld(a.name, a.heldCount)
	a.scheduleFor(w.Lease())
	if m.incarnation != a.incarnation {
		return // its caller was failed when the actor restarted
	}
	switch {
	case err == nil && o.kind == opClaim && w.Deletes():
		a.step(o) // the expired holder is gone: now claim
	case err == nil:
		a.finish(o, nil)
	case errors.Is(err, lease.ErrInvalid) && o.kind == opExpire:
		a.lostRace = true
		a.finish(o, nil) // someone else changed it first
	case errors.Is(err, lease.ErrInvalid) && o.lostRaces < a.rt.cfg.ClaimRetries:
		o.lostRaces++
		a.step(o)
	case errors.Is(err, lease.ErrInvalid):
		a.finish(o, a.gaveUp(o))
	default:
		a.finish(o, fmt.Errorf("%w: %w", ErrUnavailable, err))
	}
}

// logChange logs a change a write made (d is the duration granted, 0 for a
// delete). At a level that is off it costs nothing: no value is boxed.
func (a *namespaceActor) logChange(level slog.Level, msg string, w *natskv.Write, d time.Duration) {
	if !a.log.Enabled(context.Background(), level) {
		return
	}
	attrs := []slog.Attr{slog.String("lease", w.Lease()), slog.String("holder", w.Holder()), slog.Uint64("revision", w.Fence())}
	if d > 0 {
		attrs = append(attrs, slog.Duration("duration", d))
	}
	a.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// gaveUp is the error for an op that lost every race it was allowed. A claim
// is denied only if another holder holds the lease: denial must be exact.
func (a *namespaceActor) gaveUp(o *op) error {
	if holder, _, ok := a.store.Holder(o.lease); ok && holder != o.holder && o.kind == opClaim {
		return fmt.Errorf("%w: %q is held by %q in namespace %q", lease.ErrClaimDenied, o.lease, holder, a.name)
	}
	return fmt.Errorf("%w: lease %q in namespace %q changed under %d attempts in a row", ErrUnavailable, o.lease, a.name, o.lostRaces+1)
}

// finish answers an op and starts the next op of its lease.
func (a *namespaceActor) finish(o *op, err error) {
	if o.finished {
		return
	}
	o.finished = true
	res := opResult{err: err}
	if err == nil && o.kind == opClaim {
		res.fence, _ = a.store.Fence(o.lease)
	}
	o.reply.send(res)
	if o.kind == opClaim {
		a.rt.cfg.Metrics.Claim(a.name, claimResult(o, err))
	}
	queue := a.ops[o.lease]
	if len(queue) > 0 && queue[0] == o {
		queue = queue[1:]
	}
	if len(queue) == 0 {
		delete(a.ops, o.lease)
	} else {
		a.ops[o.lease] = queue
	}
	// Counted out once off the queue: after the last expiry the actor may
	// be idle, and the timer is set accordingly.
	if o.kind == opExpire {
		a.expiryEnded()
	}
	if len(queue) > 0 {
		a.step(queue[0])
	}
}

// claimResult is the metrics label of a finished claim.
func claimResult(o *op, err error) string {
	switch {
	case err == nil && o.granted:
		return metrics.ClaimGranted
	case err == nil:
		return metrics.ClaimExtended
	case errors.Is(err, lease.ErrClaimDenied):
		return metrics.ClaimDenied
	}
	return metrics.ClaimError
}

// wake answers the waiters of a lease that is no longer held.
func (a *namespaceActor) wake(name string) {
	if a.held(name) {
		return
	}
	for w := range a.waiters[name] {
		w.reply <- nil
	}
	delete(a.waiters, name)
}

// failAll answers every request the actor knows of with err: it is
// restarting or stopping, and its successor will not know them.
func (a *namespaceActor) failAll(err error) {
	if a.current != nil {
		a.failRequest(a.current, err)
	}
	a.failEarly(err)
	for _, queue := range a.ops {
		for _, o := range queue {
			if !o.finished {
				o.finished = true
				if o.reply.send(opResult{err: err}) && o.kind == opClaim {
					a.rt.cfg.Metrics.Claim(a.name, metrics.ClaimError)
				}
			}
		}
	}
	a.ops = make(map[string][]*op)
	for _, ws := range a.waiters {
		for w := range ws {
			trySend(w.reply, err)
		}
	}
	a.waiters = make(map[string]map[*waiter]struct{})
	for _, c := range slices.Concat(a.checking, a.afterLoad, a.nextLoad) {
		c.reply.send(checkResult{err: err})
	}
	a.checking, a.afterLoad, a.nextLoad = nil, nil, nil
}

// failEarly answers the requests that arrived before the first snapshot.
func (a *namespaceActor) failEarly(err error) {
	for _, m := range a.early {
		a.failRequest(m, err)
	}
	a.early = nil
}

// failRequest answers one request message with err, and counts a claim so
// answered as failed (once: its op, if it has one, may be failed too).
func (a *namespaceActor) failRequest(msg any, err error) {
	if m, ok := msg.(*claimRequest); ok {
		if m.reply.send(opResult{err: err}) {
			a.rt.cfg.Metrics.Claim(a.name, metrics.ClaimError)
		}
		return
	}
	failRequest(msg, err)
}

// failRequest answers one request message with err.
func failRequest(msg any, err error) {
	switch m := msg.(type) {
	case *claimRequest:
		m.reply.send(opResult{err: err})
	case *releaseRequest:
		m.reply.send(opResult{err: err})
	case *checkRequest:
		m.reply.send(checkResult{err: err})
	case *leasesRequest:
		trySend(m.reply, leasesResult{err: err})
	case *leasesPageRequest:
		trySend(m.reply, leasesPageResult{err: err})
	case *leaseRequest:
		trySend(m.reply, leaseResult{err: err})
	case *waitRequest:
		trySend(m.waiter.reply, err)
	}
}

// trySend answers on a buffered reply channel unless it was answered
// already.
func trySend[T any](ch chan T, v T) {
	select {
	case ch <- v:
	default:
	}
}

// load reads the namespace from the store, off the actor's goroutine: the
// whole of it if full (and always the first time), otherwise only the
// writes since the last read, which costs as much as there were writes
// rather than as there are leases.
func (a *namespaceActor) load(full bool) {
	if a.loading {
		a.reload = true
		a.reloadFull = a.reloadFull || full
		return
	}
	a.loading = true
	incarnation, self, st, rt := a.incarnation, a.self, a.store, a.rt
	since, changes := st.Seen(), a.ready && !full
	if !changes {
		a.fullLoadDue = a.clock.Now().Add(a.rt.cfg.MaxSleep)
	}
	if h := rt.cfg.hooks.loadStarted; h != nil {
		h(a.name, !changes)
	}
	rt.workers.Go(func() {
		ctx, cancel := context.WithTimeout(rt.ctx, rt.cfg.WriteTimeout)
		defer cancel()
		var (
			snap *natskv.Snapshot
			err  error
		)
		if changes {
			snap, err = st.LoadChanges(ctx, since)
		} else {
			snap, err = st.Load(ctx)
		}
		rt.system.Root.Send(self, &loaded{incarnation: incarnation, snapshot: snap, err: err})
	})
}

// loadFor reloads for a check that missed. A Load already in flight may
// have read the store before the check arrived, so the check waits for one
// that starts after it.
func (a *namespaceActor) loadFor(c *checkRequest) {
	if a.loading {
		a.nextLoad = append(a.nextLoad, c)
		a.reload = true
		return
	}
	a.afterLoad = append(a.afterLoad, c)
	a.load(false)
}

func (a *namespaceActor) onLoaded(m *loaded) {
	if m.incarnation != a.incarnation {
		return
	}
	a.loading = false
	if m.err != nil {
		a.log.Warn("loading leases failed", "error", m.err)
	} else if err := a.store.ApplySnapshot(m.snapshot); err != nil {
		a.log.Error("unreadable lease records left out", "error", err)
	}
	a.heldCount = a.store.Count()
	a.rt.cfg.Metrics.LeasesHeld(a.name, a.heldCount)
	if h := a.rt.cfg.hooks.loaded; h != nil {
		h(a.name)
	}
	if m.err != nil && !a.ready {
		// Without a first snapshot the actor cannot tell a free lease from
		// one it has not seen: fail what waits, and try again shortly.
		a.failEarly(fmt.Errorf("%w: loading namespace %q: %w", ErrUnavailable, a.name, m.err))
		a.scheduleAfter(time.Second)
		return
	}
	checks := a.afterLoad
	a.afterLoad, a.nextLoad = a.nextLoad, nil
	if a.reload {
		full := a.reloadFull
		a.reload, a.reloadFull = false, false
		a.load(full)
	}
	if !a.ready {
		a.ready = true
		// One at a time off the list, so that if one crashes the actor,
		// the rest are still there for failAll to answer.
		for len(a.early) > 0 {
			msg := a.early[0]
			a.early = a.early[1:]
			a.current = msg
			a.handle(msg)
		}
		a.early = nil
	}
	a.checking = checks
	for len(a.checking) > 0 { // likewise
		c := a.checking[0]
		a.checking = a.checking[1:]
		a.current = c
		if m.err != nil {
			// A miss that could not be refreshed: the store may say
			// otherwise, so "not held" would be a guess.
			c.reply.send(checkResult{err: fmt.Errorf("%w: checking %q in namespace %q: %w", ErrUnavailable, c.lease, a.name, m.err)})
			continue
		}
		a.check(c)
	}
	a.current = m
	for name := range a.waiters {
		a.wake(name)
	}
	a.reschedule()
}

// expireDue queues due leases for expiry, in name order.
func (a *namespaceActor) expireDue(names []string) {
	for _, name := range names {
		if !slices.Contains(a.expiring, name) {
			a.expiring = append(a.expiring, name)
		}
	}
	slices.Sort(a.expiring)
	a.expireAll()
}

// expireAll starts the expiry of the leases of the batch that are still
// due, in name order: with group commit all at once, so that their writes
// share rounds (which are applied in order); otherwise, once none is
// running, up to natskv.MaxBatch of them, their writes sent together as
// one round of concurrent single writes, applied in order when all have
// landed (one at a time, 10k expiries on a three-node cluster took a
// second).
func (a *namespaceActor) expireAll() {
	now := a.clock.Now()
	a.expiries++ // an expiry that ends at once must not start or reload anything in the middle
	gather := a.rt.cfg.MinBatch <= 0 && a.expiries == 1
	a.gathering = a.gathering || gather
	for len(a.expiring) > 0 && (a.rt.cfg.MinBatch > 0 || gather && len(a.gathered) < natskv.MaxBatch) {
		name := a.expiring[0]
		a.expiring = a.expiring[1:]
		_, expiry, ok := a.store.Holder(name)
		if !ok || !now.After(expiry) || len(a.ops[name]) > 0 {
			continue // renewed, gone, or another op will see to it
		}
		a.expiries++
		a.expired = true
		a.enqueue(&op{kind: opExpire, lease: name})
	}
	if gather {
		round := a.gathered
		a.gathering, a.gathered = false, nil
		if len(round) > 0 {
			a.send(0, round)
		}
	}
	a.expiries--
	a.afterExpiries()
}

// expiryEnded counts an expiry out and starts the next, or sees to the end
// of the batch after the last.
func (a *namespaceActor) expiryEnded() {
	a.expiries--
	if len(a.expiring) > 0 {
		a.expireAll()
		return
	}
	a.afterExpiries()
}

// afterExpiries sets the timer for the next expiries once every expiry of
// a batch that started any has ended. If one of them lost a race, another
// writer is at work in the namespace: it reads what changed too (without
// waiting for that: a write against a stale cache is refused, never an
// overwrite). Otherwise there is nothing to read: every write was the
// actor's own and it knows the outcome, and reading the namespace after
// each expiry kept the next expiries waiting (10k leases due within a
// second were expired 100ms late at the median).
func (a *namespaceActor) afterExpiries() {
	if a.expiries == 0 && len(a.expiring) == 0 && a.expired {
		a.expired = false
		if a.lostRace {
			a.lostRace = false
			a.load(false)
		}
		a.reschedule()
	}
}

// reschedule expires what is due and sets the timer for the next expiry,
// or for the next full Load, whichever is sooner.
func (a *namespaceActor) reschedule() {
	now := a.clock.Now()
	due, next, ok := a.store.Expiring(now)
	guarded := len(due) > 0 && !a.rt.writable(a.name)
	if len(due) > 0 && !guarded {
		a.expireDue(due)
	}
	at := a.fullLoadDue
	if at.Before(now) {
		at = now
	}
	if retry := now.Add(guardedRetry); guarded && retry.Before(at) {
		at = retry // look again, unless unloaded meanwhile
	}
	if ok && next.Before(at) {
		at = next.Add(1) // expiry needs the clock strictly past it
	}
	if stop := a.lastActive.Add(a.rt.cfg.IdleTimeout); a.idle() && stop.Before(at) {
		at = stop
	}
	a.setTimer(at)
}

// guardedRetry is how soon an actor whose write guard refused its due
// expiries looks at them again.
const guardedRetry = 100 * time.Millisecond

// scheduleFor brings the timer forward to just after the expiry of one
// lease, if that is sooner than it would fire.
func (a *namespaceActor) scheduleFor(name string) {
	_, expiry, ok := a.store.Holder(name)
	if ok && (a.timer == nil || expiry.Add(1).Before(a.timerAt)) {
		a.setTimer(expiry.Add(1))
	}
}

// scheduleAfter sets the timer to fire d from now.
func (a *namespaceActor) scheduleAfter(d time.Duration) {
	a.setTimer(a.clock.Now().Add(d))
}

func (a *namespaceActor) setTimer(at time.Time) {
	a.stopTimer()
	a.generation++
	msg := &tick{incarnation: a.incarnation, generation: a.generation}
	self, root := a.self, a.rt.system.Root
	a.timer = a.clock.AfterFunc(max(at.Sub(a.clock.Now()), 0), func() { root.Send(self, msg) })
	a.timerAt = at
}

func (a *namespaceActor) stopTimer() {
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
}

// idle reports whether the actor has nothing to keep: no held leases, no
// waiters, nothing in progress.
func (a *namespaceActor) idle() bool {
	return a.ready && a.heldCount == 0 && len(a.waiters) == 0 && len(a.ops) == 0 &&
		len(a.early) == 0 && len(a.expiring) == 0 && !a.loading &&
		len(a.afterLoad) == 0 && len(a.nextLoad) == 0
}

// onTick expires what is due (the changes are read after the expiries);
// if nothing was, it reloads the whole namespace when that is due (the
// MaxSleep safety net, and the retry of a first Load that failed), and
// otherwise sets the timer again: a lease it was set for was extended.
func (a *namespaceActor) onTick(m *tick) {
	if m.incarnation != a.incarnation || m.generation != a.generation {
		return // a timer that was replaced
	}
	a.timer = nil
	now := a.clock.Now()
	if a.idle() && !now.Before(a.lastActive.Add(a.rt.cfg.IdleTimeout)) {
		a.passivating = true
		a.rt.system.Root.Send(a.parent, &idle{namespace: a.name, who: a.self})
		return
	}
	due, _, _ := a.store.Expiring(now)
	if len(due) > 0 && a.rt.writable(a.name) { // else reschedule looks again soon
		a.expireDue(due)
	}
	switch {
	case a.expiries > 0:
	case !a.ready || !now.Before(a.fullLoadDue):
		a.load(true)
	default:
		a.reschedule()
	}
}
