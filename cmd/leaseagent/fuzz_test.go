package main

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease/messages"
)

// FuzzFormatEvent feeds arbitrary subjects and payloads to the event
// decoder of `leaseagent watch`: it must never panic, and a line it prints
// is one line.
func FuzzFormatEvent(f *testing.F) {
	ev, err := proto.Marshal(&messages.ClaimedEvent{Namespace: "ns", Lease: "l", Holder: "h", Revision: 7})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("lease.claimed.ns.l", ev)
	forged, err := proto.Marshal(&messages.ExpiredEvent{Namespace: "ns", Lease: "l", Holder: "a\nforged line"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("lease.expired.ns.l", forged)
	f.Add("lease.expired.a=2Fb.l", []byte{0xff})
	f.Add("lease.claimed", []byte{})
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		line, err := formatEvent(time.Unix(0, 0), "lease", subject, data)
		if err == nil && strings.ContainsAny(line, "\n\r") {
			t.Fatalf("event printed over several lines: %q", line)
		}
	})
}
