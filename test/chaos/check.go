package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Invariant names, by number (see the package doc).
var invariantNames = [...]string{
	1: "no two holders' guarantees overlap",
	2: "fencing tokens increase across holders",
	3: "no check says held after another holder's claim",
	4: "waits return only when free, and promptly",
	5: "no acknowledged claim is lost",
}

// Config tunes Check.
type Config struct {
	// WaitBound is how long a WaitUntilExpired may take to return after its
	// lease became free, when no fault is near. Zero turns that check off.
	WaitBound time.Duration
	// FaultSlack is how long after a fault healed it may still hold a
	// client up (reconnecting, retrying), unless the Fault says (Linger).
	// For every fault that overlaps the time allowed, that and the
	// fault's own length are added to WaitBound.
	FaultSlack time.Duration
	// MaxPerInvariant is how many violations of each invariant are kept
	// (all are counted); DefaultMaxPerInvariant if zero.
	MaxPerInvariant int
}

// DefaultMaxPerInvariant is how many violations of each invariant a
// Report keeps unless Config says.
const DefaultMaxPerInvariant = 10

// Violation is one slice of history that breaks an invariant: the two or
// three operations involved.
type Violation struct {
	Invariant int
	Lease     string
	Why       string
	Ops       []Op
	Faults    []Fault
}

func (v Violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invariant %d (%s), lease %q: %s", v.Invariant, invariantNames[v.Invariant], v.Lease, v.Why)
	for _, op := range v.Ops {
		fmt.Fprintf(&b, "\n    %s", op)
	}
	for _, f := range v.Faults {
		fmt.Fprintf(&b, "\n    %s", f)
	}
	return b.String()
}

// Stats count what a history holds, so a test can tell that a run did
// enough to mean something.
type Stats struct {
	Ops                 int
	Claims, ClaimsOK    int
	Denied              int
	Checks, ChecksHeld  int
	Releases, Released  int
	Waits, WaitsOK      int
	Failed              int
	Faults              int
	Tenures             int // distinct (lease, token) seen
	HolderChanges       int // consecutive tenures, by token, with different holders
	WaitsBoundChecked   int // waits the bound applied to
	TokensKnownOnClaims int // successful claims with a token
}

func (s Stats) String() string {
	return fmt.Sprintf("%d ops: claims %d (ok %d, denied %d), checks %d (held %d), releases %d (ok %d), waits %d (ok %d, %d bound-checked), failed %d; %d tenures, %d holder changes; %d faults",
		s.Ops, s.Claims, s.ClaimsOK, s.Denied, s.Checks, s.ChecksHeld, s.Releases, s.Released,
		s.Waits, s.WaitsOK, s.WaitsBoundChecked, s.Failed, s.Tenures, s.HolderChanges, s.Faults)
}

// Report is what Check found.
type Report struct {
	// Violations holds up to Config.MaxPerInvariant of each invariant.
	Violations []Violation
	// Found counts every violation, by invariant.
	Found [len(invariantNames)]int
	Stats Stats
}

// OK reports whether no invariant was broken.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// Check checks a history against the invariants of the package doc.
func Check(h History, cfg Config) Report {
	if cfg.MaxPerInvariant == 0 {
		cfg.MaxPerInvariant = DefaultMaxPerInvariant
	}
	c := &checker{cfg: cfg, faults: slices.Clone(h.Faults)}
	sort.Slice(c.faults, func(i, j int) bool { return c.faults[i].Start < c.faults[j].Start })
	c.rep.Stats.Faults = len(h.Faults)

	byLease := map[string]*leaseHistory{}
	for i := range h.Ops {
		op := &h.Ops[i]
		c.count(op)
		if op.End > c.end {
			c.end = op.End
		}
		if op.Kind == OpCheck && op.Result == OK && op.Token == 0 {
			c.report(Violation{
				Invariant: 2, Lease: op.Lease,
				Why: fmt.Sprintf("the check said %s holds it, but gave no fencing token", op.Holder),
				Ops: []Op{*op},
			})
		}
		l := byLease[op.Lease]
		if l == nil {
			l = &leaseHistory{name: op.Lease, releases: map[string][]*Op{}}
			byLease[op.Lease] = l
		}
		l.add(op)
	}
	names := make([]string, 0, len(byLease))
	for name := range byLease {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c.checkLease(byLease[name])
	}
	return c.rep
}

type checker struct {
	cfg    Config
	faults []Fault
	end    time.Duration // of the last operation
	rep    Report
}

func (c *checker) count(op *Op) {
	s := &c.rep.Stats
	s.Ops++
	ok := op.Result == OK
	switch op.Kind {
	case OpClaim:
		s.Claims++
		if ok {
			s.ClaimsOK++
			if op.Token != 0 {
				s.TokensKnownOnClaims++
			}
		}
		if op.Result == Denied {
			s.Denied++
		}
	case OpCheck:
		s.Checks++
		if ok {
			s.ChecksHeld++
		}
	case OpRelease:
		s.Releases++
		if ok {
			s.Released++
		}
	case OpWait:
		s.Waits++
		if ok {
			s.WaitsOK++
		}
	}
	if op.Result == Failed {
		s.Failed++
	}
}

func (c *checker) report(v Violation) {
	c.rep.Found[v.Invariant]++
	if c.rep.Found[v.Invariant] <= c.cfg.MaxPerInvariant {
		c.rep.Violations = append(c.rep.Violations, v)
	}
}

// leaseHistory is the operations on one lease, indexed for the checks.
type leaseHistory struct {
	name string

	claims     []*Op            // successful claims, by End
	allClaims  []*Op            // every claim, by Start
	releases   map[string][]*Op // by holder: releases that did or may have released, by Start
	released   []*Op            // successful releases
	checks     []*Op            // checks that said held
	notHolding []*Op            // claims denied, checks and releases not held
	waits      []*Op            // by Start
	tokens     []*Op            // successful operations with a token

	maxDuration   time.Duration            // longest successful claim
	maxClaimCall  time.Duration            // longest claim call
	maxReleaseLen map[string]time.Duration // longest release call, by holder
	windowEnd     map[*Op]time.Duration    // of each successful claim
	cutBy         map[*Op]*Op              // the release that ended a claim's window early
}

func (l *leaseHistory) add(op *Op) {
	switch {
	case op.Kind == OpClaim:
		// Even a denied claim may have made its holder the holder for a
		// while: the client retries a claim whose reply it did not get,
		// and the retry may be denied after the first attempt succeeded.
		l.allClaims = append(l.allClaims, op)
		if op.Result == OK {
			l.claims = append(l.claims, op)
		}
	case op.Kind == OpRelease && (op.Result == OK || op.Result == Failed):
		l.releases[op.Holder] = append(l.releases[op.Holder], op)
		if op.Result == OK {
			l.released = append(l.released, op)
		}
	case op.Kind == OpCheck && op.Result == OK:
		l.checks = append(l.checks, op)
	case op.Kind == OpWait:
		l.waits = append(l.waits, op)
	}
	if op.Result == Denied || op.Result == NotHeld {
		l.notHolding = append(l.notHolding, op)
	}
	if op.Result == OK && op.Token != 0 {
		l.tokens = append(l.tokens, op)
	}
}

// index sorts the lists and computes every successful claim's window: from
// its start for its duration, cut short by the start of its holder's next
// release that did or may have released.
func (l *leaseHistory) index() {
	sort.Slice(l.claims, func(i, j int) bool { return l.claims[i].End < l.claims[j].End })
	byStart := func(ops []*Op) {
		sort.Slice(ops, func(i, j int) bool { return ops[i].Start < ops[j].Start })
	}
	byStart(l.allClaims)
	byStart(l.waits)
	for _, op := range l.allClaims {
		l.maxClaimCall = max(l.maxClaimCall, op.End-op.Start)
	}
	l.maxReleaseLen = map[string]time.Duration{}
	for holder, rs := range l.releases {
		byStart(rs)
		for _, r := range rs {
			l.maxReleaseLen[holder] = max(l.maxReleaseLen[holder], r.End-r.Start)
		}
	}
	l.windowEnd = map[*Op]time.Duration{}
	l.cutBy = map[*Op]*Op{}
	for _, a := range l.claims {
		l.maxDuration = max(l.maxDuration, a.Duration)
		end := a.guarantee()
		rs := l.releases[a.Holder]
		// The first release (by start) that had not ended when a began.
		i := sort.Search(len(rs), func(i int) bool { return rs[i].Start >= a.Start-l.maxReleaseLen[a.Holder] })
		for ; i < len(rs); i++ {
			if r := rs[i]; r.End >= a.Start {
				if r.Start < end {
					end = r.Start
					l.cutBy[a] = r
				}
				break
			}
		}
		l.windowEnd[a] = end
	}
}

// window returns the end of a successful claim's window, and the ops that
// show it: the claim, and the release that cut it short if one did.
func (l *leaseHistory) window(a *Op) (time.Duration, []Op) {
	ops := []Op{*a}
	if r := l.cutBy[a]; r != nil {
		ops = append(ops, *r)
	}
	return l.windowEnd[a], ops
}

// claimsEnded returns the successful claims that ended in [from, to].
func (l *leaseHistory) claimsEnded(from, to time.Duration) []*Op {
	i := sort.Search(len(l.claims), func(i int) bool { return l.claims[i].End >= from })
	j := sort.Search(len(l.claims), func(i int) bool { return l.claims[i].End > to })
	if i >= j {
		return nil
	}
	return l.claims[i:j]
}

func (c *checker) checkLease(l *leaseHistory) {
	l.index()
	c.overlaps(l)
	c.fencing(l)
	c.staleChecks(l)
	c.waits(l)
	c.lostClaims(l)
	c.tenures(l)
}

// overlaps checks invariant 1: for every successful claim a by A, no claim
// by another holder B whose tenure began after A's succeeded before a's
// window ended. B's claim must have ended after a started: otherwise B was
// granted the lease before A asked, and if the tokens say otherwise that
// is invariant 2's to report.
//
// Two claims whose calls overlapped, and whose tokens do not tell which
// was granted first, are a violation if each ended inside the other's
// window: whichever was granted second was granted inside the first's.
// (Such a pair is reported once, from the claim that started first.)
func (c *checker) overlaps(l *leaseHistory) {
	for _, a := range l.claims {
		end, aOps := l.window(a)
		for _, b := range l.claimsEnded(a.Start, end-1) {
			if b.Holder == a.Holder {
				continue
			}
			after := b.Start >= a.End || (a.Token != 0 && b.Token > a.Token)
			unordered := b.Start < a.End && (a.Token == 0 || b.Token == 0) && a.Start <= b.Start
			ops := append(slices.Clone(aOps), *b)
			if unordered {
				bEnd, bOps := l.window(b)
				if a.End >= bEnd {
					continue
				}
				ops = append(ops, bOps[1:]...)
			} else if !after {
				continue
			}
			c.report(Violation{
				Invariant: 1, Lease: l.name,
				Why: fmt.Sprintf("%s's claim succeeded by %s, but %s was guaranteed the lease until %s",
					b.Holder, at(b.End), a.Holder, at(end)),
				Ops: ops,
			})
		}
	}
}

// fencing checks invariant 2: no token is seen with two holders, and an
// operation that began after another ended never sees a smaller token. A
// check that sees a smaller token than another holder's earlier claim is
// invariant 3's case, and reported as such.
func (c *checker) fencing(l *leaseHistory) {
	first := map[uint64]*Op{}
	shared := map[uint64]bool{}
	for _, op := range l.tokens {
		f := first[op.Token]
		switch {
		case f == nil:
			first[op.Token] = op
		case f.Holder != op.Holder && !shared[op.Token]:
			shared[op.Token] = true
			c.report(Violation{
				Invariant: 2, Lease: l.name,
				Why: fmt.Sprintf("%s and %s were both seen holding the tenure with token %d", f.Holder, op.Holder, op.Token),
				Ops: []Op{*f, *op},
			})
		}
	}

	byEnd := slices.Clone(l.tokens)
	sort.Slice(byEnd, func(i, j int) bool { return byEnd[i].End < byEnd[j].End })
	byStart := slices.Clone(l.tokens)
	sort.Slice(byStart, func(i, j int) bool { return byStart[i].Start < byStart[j].Start })
	var top *Op // the largest token among the operations that ended so far
	next := 0
	for _, op := range byStart {
		for ; next < len(byEnd) && byEnd[next].End <= op.Start; next++ {
			if top == nil || byEnd[next].Token > top.Token {
				top = byEnd[next]
			}
		}
		if top == nil || top.Token <= op.Token {
			continue
		}
		if op.Kind == OpCheck && top.Kind == OpClaim && top.Holder != op.Holder {
			c.report(Violation{
				Invariant: 3, Lease: l.name,
				Why: fmt.Sprintf("the check said %s holds it with token %d, after %s's claim with token %d had succeeded",
					op.Holder, op.Token, top.Holder, top.Token),
				Ops: []Op{*top, *op},
			})
			continue
		}
		c.report(Violation{
			Invariant: 2, Lease: l.name,
			Why: fmt.Sprintf("token %d (%s) was seen after token %d (%s) had been",
				op.Token, op.Holder, top.Token, top.Holder),
			Ops: []Op{*top, *op},
		})
	}
}

// staleChecks checks the rest of invariant 3: a check that said held for H
// did not end inside the window of another holder's claim that had
// succeeded before the check began; nor, whatever the windows, did it show
// a tenure of H (a token) seen before another holder's claim that
// succeeded before the check began: that claim ended the tenure.
func (c *checker) staleChecks(l *leaseHistory) {
	seen := map[uint64]*Op{} // the first operation to end with each token
	for _, op := range l.tokens {
		if f := seen[op.Token]; f == nil || op.End < f.End {
			seen[op.Token] = op
		}
	}
	for _, ch := range l.checks {
		first := seen[ch.Token]
		if ch.Token == 0 || first == nil {
			continue
		}
		for _, b := range l.claimsEnded(first.End, ch.Start) {
			if b.Holder != ch.Holder && b.Start >= first.End {
				c.report(Violation{
					Invariant: 3, Lease: l.name,
					Why: fmt.Sprintf("the check said %s holds it with token %d, seen by %s, but %s's claim succeeded after that, by %s",
						ch.Holder, ch.Token, at(first.End), b.Holder, at(b.End)),
					Ops: []Op{*first, *b, *ch},
				})
				break
			}
		}
	}
	for _, ch := range l.checks {
		for _, b := range l.claimsEnded(ch.End-l.maxDuration, ch.Start) {
			if b.Holder == ch.Holder {
				continue
			}
			if end, bOps := l.window(b); ch.End < end {
				c.report(Violation{
					Invariant: 3, Lease: l.name,
					Why: fmt.Sprintf("the check said %s holds it, but %s's claim had succeeded by %s and guaranteed it the lease until %s",
						ch.Holder, b.Holder, at(b.End), at(end)),
					Ops: append(bOps, *ch),
				})
			}
		}
	}
}

// waits checks invariant 4.
func (c *checker) waits(l *leaseHistory) {
	// A wait that returned nil: no holder's windows covered the whole
	// call, one window or several of the same holder back to back (a
	// claim, then extensions, each granted before the last ran out).
	for _, w := range l.waits {
		if w.Result != OK {
			continue
		}
		for _, a := range l.claimsEnded(w.Start-l.maxDuration, w.Start) {
			end, aOps := l.window(a)
			if end <= w.Start {
				continue
			}
			for extended := true; extended && end <= w.End; {
				extended = false
				for _, b := range l.claimsEnded(w.Start, end-1) {
					if bEnd, bOps := l.window(b); b.Holder == a.Holder && bEnd > end {
						end, aOps, extended = bEnd, append(aOps, bOps...), true
					}
				}
			}
			if end > w.End {
				c.report(Violation{
					Invariant: 4, Lease: l.name,
					Why: fmt.Sprintf("the wait returned, but %s held the lease throughout: its claim succeeded by %s and guaranteed it until %s",
						a.Holder, at(a.End), at(end)),
					Ops: append(aOps, *w),
				})
				break
			}
		}
	}

	if c.cfg.WaitBound <= 0 {
		return
	}
	// A lease is known to be free from the end of a successful release
	// until the start of the next claim. A claim that overlapped the
	// release may have landed after it: then the lease is not known to be
	// free at all.
	for _, r := range l.released {
		free, until, ok := l.freeAfter(r, c.end)
		if !ok {
			continue
		}
		for _, w := range l.waits {
			if w.Start >= until {
				break
			}
			if w.End <= free {
				continue
			}
			from := max(w.Start, free)
			bound := c.bound(from)
			if from+bound > until {
				continue // free too briefly to tell
			}
			c.rep.Stats.WaitsBoundChecked++
			if w.End > from+bound {
				c.report(Violation{
					Invariant: 4, Lease: l.name,
					Why: fmt.Sprintf("the lease was free from %s until at least %s, but the wait was still running at %s (allowed: %v from %s)",
						at(free), at(until), at(from+bound), bound, at(from)),
					Ops:    []Op{*r, *w},
					Faults: c.faultsIn(from, from+bound),
				})
			}
		}
	}
}

// freeAfter returns the interval during which the lease is known to be
// free after a successful release, ending at the next claim (which may
// have succeeded, whatever it answered) or at the end of the history.
func (l *leaseHistory) freeAfter(r *Op, historyEnd time.Duration) (from, until time.Duration, ok bool) {
	from, until = r.End, historyEnd
	cs := l.allClaims
	i := sort.Search(len(cs), func(i int) bool { return cs[i].Start >= r.Start-l.maxClaimCall })
	for ; i < len(cs); i++ {
		cl := cs[i]
		if cl.End <= r.Start {
			continue // done before the release began
		}
		if cl.Start <= from {
			return 0, 0, false // may have landed after the release
		}
		until = min(until, cl.Start)
		break
	}
	return from, until, from < until
}

// bound returns how long a wait may take to return after from: WaitBound,
// plus each fault overlapping that time with FaultSlack.
func (c *checker) bound(from time.Duration) time.Duration {
	b := c.cfg.WaitBound
	for {
		nb := c.cfg.WaitBound
		for _, f := range c.faultsIn(from, from+b) {
			nb += f.End - f.Start + c.linger(f)
		}
		if nb <= b {
			return b
		}
		b = nb
	}
}

// faultsIn returns the faults that overlap [from, to], counting a fault as
// lasting until it stopped lingering.
func (c *checker) faultsIn(from, to time.Duration) []Fault {
	var out []Fault
	for _, f := range c.faults {
		if f.Start <= to && f.End+c.linger(f) >= from {
			out = append(out, f)
		}
	}
	return out
}

// linger returns how long after it healed a fault may hold clients up.
func (c *checker) linger(f Fault) time.Duration {
	if f.Linger > 0 {
		return f.Linger
	}
	return c.cfg.FaultSlack
}

// lostClaims checks invariant 5: an operation that found A not holding the
// lease did not begin after A's successful claim ended and end inside its
// window.
func (c *checker) lostClaims(l *leaseHistory) {
	for _, x := range l.notHolding {
		for _, a := range l.claimsEnded(x.End-l.maxDuration, x.Start) {
			if a.Holder != x.Holder {
				continue
			}
			end, aOps := l.window(a)
			if x.End >= end {
				continue
			}
			what := "told it does not hold the lease"
			if x.Kind == OpClaim {
				what = "denied the lease it holds"
			}
			c.report(Violation{
				Invariant: 5, Lease: l.name,
				Why: fmt.Sprintf("%s was %s by %s, but its claim succeeded by %s and guaranteed it the lease until %s",
					x.Holder, what, at(x.End), at(a.End), at(end)),
				Ops: append(aOps, *x),
			})
			break
		}
	}
}

// tenures counts the distinct tokens seen and the holder changes between
// consecutive ones.
func (c *checker) tenures(l *leaseHistory) {
	holder := map[uint64]string{}
	for _, op := range l.tokens {
		holder[op.Token] = op.Holder
	}
	tokens := make([]uint64, 0, len(holder))
	for t := range holder {
		tokens = append(tokens, t)
	}
	slices.Sort(tokens)
	c.rep.Stats.Tenures += len(tokens)
	for i := 1; i < len(tokens); i++ {
		if holder[tokens[i]] != holder[tokens[i-1]] {
			c.rep.Stats.HolderChanges++
		}
	}
}
