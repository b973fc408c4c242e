package protocol_test

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/protocol"
)

func TestStatusRoundTrip(t *testing.T) {
	for _, sentinel := range []error{
		lease.ErrClaimDenied, lease.ErrNotHeld, protocol.ErrInvalidArgument,
		protocol.ErrUnavailable, protocol.ErrInternal,
	} {
		t.Run(sentinel.Error(), func(t *testing.T) {
			sent := fmt.Errorf("lease %q: %w", "l", sentinel)
			got := protocol.Err(protocol.Status(sent))
			if !errors.Is(got, sentinel) || got.Error() != sent.Error() {
				t.Fatalf("round trip of %v = %v", sent, got)
			}
		})
	}
	if err := protocol.Err(protocol.Status(nil)); err != nil {
		t.Fatalf("OK status = %v", err)
	}
	if err := protocol.Err(&messages.Status{}); !errors.Is(err, protocol.ErrInternal) {
		t.Fatalf("unspecified code = %v, want ErrInternal", err)
	}
}

// A refusal before anything was done crosses the wire as
// CODE_UNAVAILABLE with refused set, and comes back matching both
// ErrUnavailable and ErrRefused, with its text; an unavailable error that
// is not a refusal does not match ErrRefused.
func TestRefusedRoundTrip(t *testing.T) {
	tests := []struct {
		name        string
		sent        error
		wantRefused bool
	}{
		{"refused", protocol.Refused(fmt.Errorf("%w: too many requests in flight", protocol.ErrUnavailable)), true},
		{"unavailable", fmt.Errorf("%w: the store timed out", protocol.ErrUnavailable), false},
		{"refused mark on another code", protocol.Refused(fmt.Errorf("%w: bad", protocol.ErrInvalidArgument)), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := protocol.Status(tc.sent)
			if st.GetRefused() != tc.wantRefused {
				t.Fatalf("status of %v: refused %v, want %v", tc.sent, st.GetRefused(), tc.wantRefused)
			}
			got := protocol.Err(st)
			if errors.Is(got, protocol.ErrRefused) != tc.wantRefused || got.Error() != tc.sent.Error() {
				t.Fatalf("round trip of %v = %v (ErrRefused %v, want %v)", tc.sent, got, errors.Is(got, protocol.ErrRefused), tc.wantRefused)
			}
		})
	}
	if err := protocol.Err(&messages.Status{Code: messages.Code_CODE_UNAVAILABLE, Refused: true}); !errors.Is(err, protocol.ErrUnavailable) || !errors.Is(err, protocol.ErrRefused) {
		t.Fatalf("refused status without a message = %v, want ErrUnavailable and ErrRefused", err)
	}
	if err := protocol.Err(&messages.Status{Code: messages.Code_CODE_DENIED, Refused: true}); errors.Is(err, protocol.ErrRefused) {
		t.Fatalf("refused set on CODE_DENIED = %v, want it ignored", err)
	}
}

// An error whose text is not UTF-8 (a parser quoting a raw byte) still
// makes a status that encodes, in both encodings.
func TestStatusOfNonUTF8ErrorEncodes(t *testing.T) {
	st := protocol.Status(fmt.Errorf("%w: invalid value \xff", protocol.ErrInvalidArgument))
	if st.GetMessage() != "invalid argument: invalid value \uFFFD" {
		t.Fatalf("message %q", st.GetMessage())
	}
	for _, json := range []bool{false, true} {
		if _, err := protocol.Encode(&messages.ErrorReply{Status: st}, json); err != nil {
			t.Fatalf("Encode (json %v): %v", json, err)
		}
	}
}

func TestDecode(t *testing.T) {
	valid, err := proto.Marshal(&messages.ClaimRequest{Lease: "l", Holder: "h", Duration: durationpb.New(1)})
	if err != nil {
		t.Fatal(err)
	}
	unknown := append(append([]byte{}, valid...), 0xf8, 0x01, 0x01) // field 31, varint 1
	tests := []struct {
		name string
		data string
		json bool
		ok   bool
	}{
		{"protobuf", string(valid), false, true},
		{"empty protobuf", "", false, true},
		{"garbage protobuf", "\xff\xff\xff", false, false},
		{"unknown protobuf field", string(unknown), false, false},
		{"json", `{"lease":"l","holder":"h","duration":"60s"}`, true, true},
		{"unknown json field", `{"lease":"l","colour":"red"}`, true, false},
		{"garbage json", `{"lease":`, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := protocol.Decode([]byte(tt.data), tt.json, &messages.ClaimRequest{})
			if (err == nil) != tt.ok {
				t.Fatalf("Decode = %v, ok want %v", err, tt.ok)
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	if got := protocol.RequestSubject("lease", protocol.OpClaim, "app/one"); got != "lease.claim.app=2Fone" {
		t.Fatalf("request subject %q", got)
	}
	if got := protocol.EventSubject("lease", protocol.EventExpired, "ns", "mysql"); got != "lease.expired.ns.mysql" {
		t.Fatalf("event subject %q", got)
	}
}

func TestValidPrefix(t *testing.T) {
	for p, want := range map[string]bool{
		"lease": true, "org.leases": true, "a-b_c": true,
		"": false, "a..b": false, ".a": false, "a.": false, "a.*": false, "a.>": false, "a b": false, "a/b": false,
	} {
		if got := protocol.ValidPrefix(p); got != want {
			t.Errorf("ValidPrefix(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestIsJSON(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header map[string][]string
		want   bool
	}{
		{"no headers", nil, false},
		{"as the Go client writes it", map[string][]string{"Content-Type": {"application/json"}}, true},
		{"header name in lower case", map[string][]string{"content-type": {"application/json"}}, true},
		{"media type in upper case", map[string][]string{"Content-Type": {"Application/JSON"}}, true},
		{"with a charset", map[string][]string{"Content-Type": {"application/json; charset=utf-8"}}, true},
		{"protobuf", map[string][]string{"Content-Type": {"application/protobuf"}}, false},
		{"a media type that only starts alike", map[string][]string{"Content-Type": {"application/jsonl"}}, false},
		{"empty value", map[string][]string{"Content-Type": {}}, false},
		{"another header", map[string][]string{"Accept": {"application/json"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := protocol.IsJSON(tc.header); got != tc.want {
				t.Errorf("IsJSON(%v) = %v, want %v", tc.header, got, tc.want)
			}
		})
	}
}
