package agent

import (
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leaseagent/lease/messages"
)

// No lease adds less to a list reply than minListEntrySize, in either
// encoding, so maxListEntries of them never fit the room it was given and
// a page without a limit is cut by its room, never by the cap.
func TestMaxListEntriesIsMoreThanFit(t *testing.T) {
	smallest := []*messages.LeaseInfo{
		{Lease: "l", Holder: "h", Revision: 1, ExpiresIn: durationpb.New(0)},
		{Lease: "\x01", Holder: "\x01", Revision: 1, ExpiresIn: durationpb.New(0)},
		{Lease: "l", Holder: "h", Revision: 1, ExpiresIn: durationpb.New(1)},
	}
	if size := listEntrySize(smallest[0], false); size != minListEntrySize {
		t.Errorf("the smallest lease adds %d bytes, minListEntrySize is %d", size, minListEntrySize)
	}
	for _, l := range smallest {
		for _, json := range []bool{false, true} {
			if size := listEntrySize(l, json); size < minListEntrySize {
				t.Errorf("%v (json %v) adds %d bytes, less than minListEntrySize %d", l, json, size, minListEntrySize)
			}
		}
	}
	for _, room := range []int{-1, 0, 1, minListEntrySize - 1, minListEntrySize, 1 << 20, 64 << 20} {
		if n := maxListEntries(room); n < 1 || n*minListEntrySize <= room {
			t.Errorf("maxListEntries(%d) = %d: that many of the smallest leases fit", room, n)
		}
	}
}
