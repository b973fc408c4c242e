package main

import (
	"math"
	"testing"
	"time"

	"github.com/leaseagent/lease/bench/stats"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-clients", "1, 8,32", "-sync", "off", "-parts", "core,peers"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.clients) != 3 || o.clients[1] != 8 || len(o.modes) != 1 || o.modes[0] || !o.peers || o.expiry || o.parts["list"] {
		t.Errorf("parsed %+v", o)
	}
	for _, bad := range [][]string{{"-clients", "0"}, {"-sync", "maybe"}, {"-parts", "core,nope"}, {"-flood-listers", "0"}, {"extra"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestRatios(t *testing.T) {
	rep := &report{}
	add := func(group, mode, name string, n int, rate float64) *row {
		x := &row{Group: group, Mode: mode, Name: name, Clients: n, Summary: stats.Summary{Rate: rate}}
		rep.Rows = append(rep.Rows, x)
		return x
	}
	add("limit", modeNoFsync, rowKVPipe, 32, 80000)
	add("limit", modeNoFsync, rowKVSeq, 32, 40000)
	add("limit", modeNoFsync, rowEcho, 32, 50000)
	cycle := add("ours", modeNoFsync, rowCycle, 32, 20000)
	extend := add("ours", modeNoFsync, rowExtend, 32, 10000)
	check := add("ours", modeNoFsync, rowCheck, 32, 40000)
	ourCycleFsync := add("ours", modeFsync, rowCycle, 32, 3000)
	etcd := add("peer", peerEtcd, rowCycle, 32, 1500)
	redis := add("peer", peerRedis, rowCycle, 32, 40000)
	lonely := add("peer", peerRedisAOF, rowCheck, 1, 1000) // ours not measured
	rep.ratios(options{duration: time.Second})

	want := map[*row]float64{cycle: 0.5, extend: 0.25, check: 0.8, etcd: 2, redis: 0.5}
	for x, w := range want {
		if x.Ratio == nil || *x.Ratio != w {
			t.Errorf("%s %s ratio = %v, want %v", x.Mode, x.Name, x.Ratio, w)
		}
	}
	if ourCycleFsync.Ratio != nil {
		t.Errorf("fsync cycle has a ratio without its baseline: %v", *ourCycleFsync.Ratio)
	}
	if lonely.Ratio != nil {
		t.Errorf("a peer row without ours has a ratio")
	}
	if etcd.Target != "> 1" || cycle.Target != ">= 0.5" {
		t.Errorf("targets %q %q", etcd.Target, cycle.Target)
	}
	if cycle.Ceiling != nil {
		t.Errorf("a cycle has a ceiling without its baselines' CPU: %v", *cycle.Ceiling)
	}
}

func TestCycleCeiling(t *testing.T) {
	rep := &report{}
	add := func(mode, group, name string, rate float64, cpu time.Duration) *row {
		x := &row{Group: group, Mode: mode, Name: name, Clients: 32, Summary: stats.Summary{Rate: rate, CPUPerOp: cpu}}
		rep.Rows = append(rep.Rows, x)
		return x
	}
	// 20us of CPU per echo and 5us per write: a cycle costs at least
	// 50us, its baseline (two writes) 10us. The rates do not matter.
	for _, mode := range []string{modeNoFsync, modeFsync} {
		add(mode, "limit", rowKVPipe, 1000, 5*time.Microsecond)
		add(mode, "limit", rowEcho, 1000, 20*time.Microsecond)
	}
	cycle := add(modeNoFsync, "ours", rowCycle, 10000, 0)
	durable := add(modeFsync, "ours", rowCycle, 10000, 0)
	rep.ratios(options{duration: time.Second})
	if cycle.Ceiling == nil || math.Abs(*cycle.Ceiling-0.2) > 1e-9 {
		t.Errorf("ceiling = %v, want 0.2", cycle.Ceiling)
	}
	if durable.Ceiling != nil {
		t.Errorf("a cycle with fsync has a CPU ceiling: %v", *durable.Ceiling)
	}
}
