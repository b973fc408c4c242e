package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/bench/stats"
	"github.com/leaseagent/lease/protocol"
)

// expiryResult is how late the expired events of count leases came.
type expiryResult struct {
	Leases   int           `json:"leases"`
	Claimed  int           `json:"claimed"`
	Received int           `json:"received"`
	Lead     time.Duration `json:"lead_ns"`
	Late     stats.Summary `json:"lateness"`
}

// expiry claims count leases from 32 clients so that they expire evenly
// spread over one second, lead from now, subscribes to their expired
// events, and measures for each lease how late its event came: received
// minus the expiry the claimer computed (its claim's start plus the
// duration it asked for).
func (e *env) expiry(count int, lead time.Duration) (expiryResult, error) {
	res := expiryResult{Leases: count, Lead: lead}
	nc, err := e.tcpConn()
	if err != nil {
		return res, err
	}
	received := make([]time.Time, count)
	var mu sync.Mutex
	n := 0
	all := make(chan struct{})
	prefix := "x-"
	sub, err := nc.Subscribe(protocol.DefaultPrefix+"."+protocol.EventExpired+".expiry.*", func(m *nats.Msg) {
		now := time.Now()
		tok := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		i, err := strconv.Atoi(strings.TrimPrefix(tok, prefix))
		if err != nil || i < 0 || i >= count {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if received[i].IsZero() {
			received[i] = now
			n++
			if n == count {
				close(all)
			}
		}
	})
	if err != nil {
		return res, err
	}
	if err := nc.Flush(); err != nil {
		return res, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return res, err
	}

	cs, err := e.clientsN(32)
	if err != nil {
		return res, err
	}
	t0 := time.Now().Add(lead)
	due := make([]time.Time, count)
	claimed := make([]bool, count)
	err = parallelEach(32, count, func(i int) error {
		target := t0.Add(time.Duration(i) * time.Second / time.Duration(count))
		start := time.Now()
		d := target.Sub(start)
		if d < 100*time.Millisecond {
			return fmt.Errorf("lease %d: claimed too late to expire on time (lead %v too short)", i, lead)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cs[i%32].Namespace("expiry").ClaimContext(ctx, fmt.Sprintf("%s%d", prefix, i), "h", d); err != nil {
			return err
		}
		due[i] = start.Add(d)
		claimed[i] = true
		return nil
	})
	for _, ok := range claimed {
		if ok {
			res.Claimed++
		}
	}
	if err != nil && res.Claimed == 0 {
		return res, err
	}
	select {
	case <-all:
	case <-time.After(time.Until(t0) + time.Second + 30*time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	var r stats.Result
	for i := range count {
		if !claimed[i] || received[i].IsZero() {
			continue
		}
		r.Ops++
		r.Latencies = append(r.Latencies, received[i].Sub(due[i]))
	}
	res.Received = r.Ops
	r.Elapsed = time.Second
	res.Late = r.Summarise()
	if err != nil {
		res.Late.FirstError = err.Error()
	}
	return res, nil
}
