package actors

import (
	"context"
	"iter"
	"time"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/natskv"
)

// store is what a namespace actor needs of its lease store; *natskv.Client
// has it. Everything but Load, LoadChanges and Write.Run is called on the
// actor's goroutine only.
type store interface {
	Lease(name string) (lease.Info, bool)
	Holder(name string) (holder string, expiry time.Time, ok bool)
	Fence(name string) (uint64, bool)
	Leases() map[string]lease.Info
	LeasesAfter(after string) iter.Seq[natskv.Held]
	Count() int
	Expiring(now time.Time) (due []string, next time.Time, ok bool)

	PrepareClaim(name string, r lease.Request) (*natskv.Write, error)
	PrepareLocalExtend(name string, r lease.Request) (*natskv.Write, error)
	PrepareExpire(name string) (*natskv.Write, error)
	PrepareRelease(name, holder string) (*natskv.Write, error)
	Apply(w *natskv.Write) error

	Load(ctx context.Context) (*natskv.Snapshot, error)
	LoadChanges(ctx context.Context, since uint64) (*natskv.Snapshot, error)
	Seen() uint64
	ApplySnapshot(s *natskv.Snapshot) error
}

var _ store = (*natskv.Client)(nil)
