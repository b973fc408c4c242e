package clocktest_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/leaseagent/lease/clock/clocktest"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestAdvanceRunsDueTimersInOrderAtTheirTime(t *testing.T) {
	c := clocktest.NewFake(t0)
	var got []time.Duration
	record := func() { got = append(got, c.Now().Sub(t0)) }
	c.AfterFunc(3*time.Second, record)
	c.AfterFunc(time.Second, record)
	c.AfterFunc(2*time.Second, record)
	c.AfterFunc(10*time.Second, record)

	c.Advance(3 * time.Second)
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}; !reflect.DeepEqual(got, want) {
		t.Fatalf("timers ran at %v, want %v", got, want)
	}
	if c.Now() != t0.Add(3*time.Second) || c.Timers() != 1 {
		t.Fatalf("after Advance: now %v, %d timers pending", c.Now(), c.Timers())
	}
}

func TestTimerDueAtTheEndRunsButNotOneNanosecondLater(t *testing.T) {
	c := clocktest.NewFake(t0)
	ran := 0
	c.AfterFunc(time.Second, func() { ran++ })
	c.AfterFunc(time.Second+1, func() { ran++ })
	c.Advance(time.Second)
	if ran != 1 {
		t.Fatalf("%d timers ran, want 1", ran)
	}
}

func TestStopPreventsTheCall(t *testing.T) {
	c := clocktest.NewFake(t0)
	timer := c.AfterFunc(time.Second, func() { t.Fatal("stopped timer ran") })
	if !timer.Stop() {
		t.Fatal("Stop of a pending timer = false")
	}
	if timer.Stop() {
		t.Fatal("second Stop = true")
	}
	c.Advance(time.Minute)
}

func TestTimerSetFromATimerRunsInTheSameAdvance(t *testing.T) {
	c := clocktest.NewFake(t0)
	var at time.Time
	c.AfterFunc(time.Second, func() {
		c.AfterFunc(time.Second, func() { at = c.Now() })
	})
	c.Advance(5 * time.Second)
	if want := t0.Add(2 * time.Second); !at.Equal(want) {
		t.Fatalf("chained timer ran at %v, want %v", at, want)
	}
}

func TestZeroDelayRunsAtOnce(t *testing.T) {
	c := clocktest.NewFake(t0)
	ran := false
	timer := c.AfterFunc(0, func() { ran = true })
	if !ran {
		t.Fatal("zero-delay timer did not run in AfterFunc")
	}
	if timer.Stop() {
		t.Fatal("Stop of a timer that ran = true")
	}
}

func TestSetRunsNoTimersUntilTheNextAdvance(t *testing.T) {
	c := clocktest.NewFake(t0)
	ran := false
	c.AfterFunc(time.Second, func() { ran = true })
	c.Set(t0.Add(time.Minute))
	if ran || !c.Now().Equal(t0.Add(time.Minute)) {
		t.Fatalf("after Set: ran %v, now %v", ran, c.Now())
	}
	c.Advance(0)
	if !ran {
		t.Fatal("timer that fell due during Set did not run at the next Advance")
	}
}
