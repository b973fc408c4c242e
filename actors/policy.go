package actors

import (
	"fmt"
	"time"
)

// validatePolicy checks Config.Policy, and that its namespaces' limits fit
// within MaxDuration.
func (c Config) validatePolicy() error {
	if c.Policy == nil {
		return nil
	}
	if err := c.Policy.Validate(); err != nil {
		return fmt.Errorf("actors: Config.Policy: %w", err)
	}
	maxDuration := c.MaxDuration
	if maxDuration == 0 {
		maxDuration = DefaultMaxDuration
	}
	if err := c.Policy.CheckMaxDuration(maxDuration); err != nil {
		return fmt.Errorf("actors: Config.Policy: %w", err)
	}
	return nil
}

// The policy checks of a Namespace's calls. Each returns nil or an error
// wrapping ErrInvalidArgument and the policy's *policy.Violation. They are
// made before a request is sent to the namespace's actor, so a refused
// request never starts it.

func (n *Namespace) policyNamespace() error {
	return refused(n.m.rt.cfg.Policy.CheckNamespace(n.name))
}

func (n *Namespace) policyLease(leaseName string) error {
	return refused(n.m.rt.cfg.Policy.CheckLease(n.name, leaseName))
}

func (n *Namespace) policyHolder(holderName string) error {
	return refused(n.m.rt.cfg.Policy.CheckHolder(n.name, holderName))
}

func (n *Namespace) policyDuration(d time.Duration) error {
	return refused(n.m.rt.cfg.Policy.CheckDuration(n.name, d))
}

func refused(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
}
