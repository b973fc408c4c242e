package client_test

import (
	"testing"

	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/internal/testenv"
	"github.com/leaseagent/lease/leasetest"
)

// The same scenarios run against the in-process Manager and against this
// package over a real agent, so the two cannot drift apart.
func TestConformanceManager(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) leasetest.Target {
		e := testenv.Start(t)
		return leasetest.Target{
			Namespace: func(name string) leasetest.Namespace { return e.Manager.Namespace(name) },
			Advance:   e.Clock.Advance,
		}
	})
}

func TestConformanceClient(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) leasetest.Target {
		e := testenv.Start(t)
		c, err := client.New(e.Connect(t))
		if err != nil {
			t.Fatal(err)
		}
		return leasetest.Target{
			Namespace: func(name string) leasetest.Namespace { return c.Namespace(name) },
			Advance:   e.Clock.Advance,
		}
	})
}
