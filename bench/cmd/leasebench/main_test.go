package main

import (
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
	for _, bad := range [][]string{{"-clients", "0"}, {"-sync", "maybe"}, {"-parts", "core,nope"}, {"extra"}} {
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
}
