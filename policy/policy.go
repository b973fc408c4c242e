package policy

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/leaseagent/lease/natskv"
)

// Policy is the rules of a lease manager's namespaces. The zero value
// allows every namespace with no rules of its own.
type Policy struct {
	// DenyUnknown refuses namespaces that are not in Namespaces. False
	// (the default, and allow_unknown_namespaces = true in a file) lets
	// them be used with the manager's global limits only.
	DenyUnknown bool

	// Namespaces holds the rules of each declared namespace, by name.
	Namespaces map[string]Namespace
}

// Namespace is the rules of one namespace. Zero fields add no rule.
type Namespace struct {
	// MinDuration is the shortest claim allowed; 0 means any positive
	// duration.
	MinDuration time.Duration

	// MaxDuration is the longest claim allowed; 0 means the manager's
	// MaxDuration.
	MaxDuration time.Duration

	// Lease and Holder, if not nil, must match every lease name and every
	// holder name used in the namespace.
	Lease  *Pattern
	Holder *Pattern
}

// Pattern is a regular expression that must match a whole name.
type Pattern struct {
	expr string
	re   *regexp.Regexp
}

// NewPattern compiles expr (Go regexp syntax) as a Pattern that matches
// whole names only, as if written ^(?:expr)$. An empty expr is an error.
func NewPattern(expr string) (*Pattern, error) {
	p := new(Pattern)
	if err := p.UnmarshalText([]byte(expr)); err != nil {
		return nil, err
	}
	return p, nil
}

// MustPattern is NewPattern that panics on a bad expression; for
// patterns written in Go source.
func MustPattern(expr string) *Pattern {
	p, err := NewPattern(expr)
	if err != nil {
		panic(err)
	}
	return p
}

// String returns the expression as it was written.
func (p *Pattern) String() string {
	if p == nil {
		return ""
	}
	return p.expr
}

// Match reports whether name matches the whole pattern. A nil Pattern
// matches every name.
func (p *Pattern) Match(name string) bool {
	return p == nil || p.re.MatchString(name)
}

// UnmarshalText compiles text as NewPattern does; it lets a file hold
// patterns.
func (p *Pattern) UnmarshalText(text []byte) error {
	expr := string(text)
	if expr == "" {
		return errors.New("empty regular expression: it matches no name; leave the pattern out to allow any name")
	}
	// The expression must stand on its own: one with unbalanced
	// parentheses, such as "a)|(.*", compiles once wrapped in our anchors
	// and then matches any name.
	if _, err := regexp.Compile(expr); err != nil {
		return fmt.Errorf("bad regular expression %q: %w", expr, err)
	}
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return fmt.Errorf("bad regular expression %q: %w", expr, err)
	}
	p.expr, p.re = expr, re
	return nil
}

// MarshalText returns the expression as it was written.
func (p *Pattern) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// Validate reports every invalid rule, each error naming the namespace and
// the key, for example `namespace "x": max_duration 1s is below
// min_duration 5s`. Namespaces are reported in name order.
func (p *Policy) Validate() error {
	if p == nil {
		return nil
	}
	var errs []error
	for _, name := range p.names() {
		ns := p.Namespaces[name]
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("namespace %q: %s", name, fmt.Sprintf(format, args...)))
		}
		if err := natskv.CheckName("namespace", name); err != nil {
			bad("%v", err)
		}
		if ns.MinDuration < 0 {
			bad("min_duration %v is negative", ns.MinDuration)
		}
		if ns.MaxDuration < 0 {
			bad("max_duration %v is negative", ns.MaxDuration)
		}
		if ns.MinDuration > 0 && ns.MaxDuration > 0 && ns.MaxDuration < ns.MinDuration {
			bad("max_duration %v is below min_duration %v", ns.MaxDuration, ns.MinDuration)
		}
		if (ns.Lease != nil && ns.Lease.re == nil) || (ns.Holder != nil && ns.Holder.re == nil) {
			bad("a Pattern not made by NewPattern")
		}
	}
	return errors.Join(errs...)
}

// CheckMaxDuration reports the namespaces whose max_duration or
// min_duration is above max, the longest claim the lease manager allows at
// all: a rule nobody could meet is a mistake in the configuration.
func (p *Policy) CheckMaxDuration(max time.Duration) error {
	if p == nil {
		return nil
	}
	var errs []error
	for _, name := range p.names() {
		ns := p.Namespaces[name]
		if ns.MaxDuration > max {
			errs = append(errs, fmt.Errorf("namespace %q: max_duration %v is above the global max_duration %v", name, ns.MaxDuration, max))
		} else if ns.MinDuration > max {
			errs = append(errs, fmt.Errorf("namespace %q: min_duration %v is above the global max_duration %v", name, ns.MinDuration, max))
		}
	}
	return errors.Join(errs...)
}

// names returns the declared namespaces in order.
func (p *Policy) names() []string {
	names := make([]string, 0, len(p.Namespaces))
	for name := range p.Namespaces {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Violation is a request that breaks the policy.
type Violation struct {
	Namespace string
	// Rule says what is wrong, for example "duration 1s is below the
	// minimum 5s".
	Rule string
}

// Error returns the violation as the lease manager reports it:
// namespace "NAME": RULE.
func (v *Violation) Error() string {
	return fmt.Sprintf("namespace %q: %s", v.Namespace, v.Rule)
}

// rules returns the rules of namespace ns, or a Violation if ns may not be
// used.
func (p *Policy) rules(ns string) (Namespace, error) {
	if p == nil {
		return Namespace{}, nil
	}
	rules, ok := p.Namespaces[ns]
	if !ok && p.DenyUnknown {
		return Namespace{}, &Violation{Namespace: ns, Rule: "not allowed: the policy does not declare it and allows no unknown namespaces"}
	}
	return rules, nil
}

// CheckNamespace returns a *Violation if namespace ns may not be used.
func (p *Policy) CheckNamespace(ns string) error {
	_, err := p.rules(ns)
	return err
}

// CheckLease returns a *Violation if namespace ns may not be used or
// leaseName is not allowed in it.
func (p *Policy) CheckLease(ns, leaseName string) error {
	rules, err := p.rules(ns)
	if err != nil {
		return err
	}
	if !rules.Lease.Match(leaseName) {
		return &Violation{Namespace: ns, Rule: fmt.Sprintf("lease name %q does not match lease_pattern %s", leaseName, rules.Lease)}
	}
	return nil
}

// CheckHolder returns a *Violation if namespace ns may not be used or
// holder is not allowed in it.
func (p *Policy) CheckHolder(ns, holder string) error {
	rules, err := p.rules(ns)
	if err != nil {
		return err
	}
	if !rules.Holder.Match(holder) {
		return &Violation{Namespace: ns, Rule: fmt.Sprintf("holder name %q does not match holder_pattern %s", holder, rules.Holder)}
	}
	return nil
}

// CheckDuration returns a *Violation if namespace ns may not be used or a
// claim for d is outside its limits. It does not check the manager's
// global limits.
func (p *Policy) CheckDuration(ns string, d time.Duration) error {
	rules, err := p.rules(ns)
	if err != nil {
		return err
	}
	switch {
	case rules.MinDuration > 0 && d < rules.MinDuration:
		return &Violation{Namespace: ns, Rule: fmt.Sprintf("duration %v is below the minimum %v", d, rules.MinDuration)}
	case rules.MaxDuration > 0 && d > rules.MaxDuration:
		return &Violation{Namespace: ns, Rule: fmt.Sprintf("duration %v is above the maximum %v", d, rules.MaxDuration)}
	}
	return nil
}

// CheckClaim checks everything a claim names: the namespace, the lease
// and holder names and the duration, in that order, and returns the first
// *Violation.
func (p *Policy) CheckClaim(ns, leaseName, holder string, d time.Duration) error {
	if err := p.CheckLease(ns, leaseName); err != nil {
		return err
	}
	if err := p.CheckHolder(ns, holder); err != nil {
		return err
	}
	return p.CheckDuration(ns, d)
}
