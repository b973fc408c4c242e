package natskv

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/messages"
)

// FuzzDecodeRecord feeds arbitrary bytes to the stored-record decoder: it
// must never panic, and whatever it accepts must be a valid request that
// survives encoding and decoding again.
func FuzzDecodeRecord(f *testing.F) {
	for _, rec := range []*messages.LeaseRecord{
		{Holder: "unit/0", Duration: durationpb.New(time.Minute), WriterId: "w", Namespace: "ns", Lease: "l"},
		{Holder: "h", Duration: durationpb.New(1), ClaimRevision: 42},
		{Holder: "", Duration: durationpb.New(time.Second)},
		{Holder: "h", Duration: &durationpb.Duration{Seconds: 1, Nanos: -1}},
	} {
		data, err := proto.Marshal(rec)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{0xff, 0xfe, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		holder, d, fence, err := decodeRecord(data)
		if err != nil {
			return
		}
		if verr := (lease.Request{Holder: holder, Duration: d}).Validate(); verr != nil {
			t.Fatalf("decodeRecord accepted an invalid record: %v", verr)
		}
		again, err := proto.Marshal(&messages.LeaseRecord{Holder: holder, Duration: durationpb.New(d), ClaimRevision: fence})
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		h2, d2, f2, err := decodeRecord(again)
		if err != nil || h2 != holder || d2 != d || f2 != fence {
			t.Fatalf("round trip: %q %v %d -> %q %v %d, %v", holder, d, fence, h2, d2, f2, err)
		}
	})
}
