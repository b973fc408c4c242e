package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/internal/testenv"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

const patience = 10 * time.Second

func request(t *testing.T, nc *nats.Conn, subject string, data []byte, header nats.Header) *nats.Msg {
	t.Helper()
	msg, err := nc.RequestMsg(&nats.Msg{Subject: subject, Data: data, Header: header}, patience)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return msg
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func claimBody(t *testing.T, leaseName, holder string, d time.Duration) []byte {
	return marshal(t, &messages.ClaimRequest{Lease: leaseName, Holder: holder, Duration: durationpb.New(d)})
}

// pbDurationClaim returns a claim whose duration is seconds long, which
// need not fit a time.Duration.
func pbDurationClaim(t *testing.T, seconds int64) []byte {
	return marshal(t, &messages.ClaimRequest{Lease: "l", Holder: "h", Duration: &durationpb.Duration{Seconds: seconds}})
}

// status decodes the status of a protobuf reply.
func status(t *testing.T, msg *nats.Msg) *messages.Status {
	t.Helper()
	var r messages.ClaimReply // every reply has its status in field 1
	if err := proto.Unmarshal(msg.Data, &r); err != nil {
		t.Fatalf("reply on %s: %v", msg.Subject, err)
	}
	return r.GetStatus()
}

func TestBadInputGetsANamedErrorAndChangesNothing(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	unknownField := append(claimBody(t, "l", "h", time.Minute), 0xf8, 0x01, 0x01)
	tests := []struct {
		name    string
		subject string
		data    []byte
		want    string // the reply's message names the problem
	}{
		{"empty claim body", "lease.claim.ns", nil, "duration is missing"},
		{"garbage", "lease.claim.ns", []byte("\xff\xff\xff\xff"), "malformed protobuf"},
		{"unknown field", "lease.claim.ns", unknownField, "unknown fields"},
		{"long lease name", "lease.claim.ns", claimBody(t, strings.Repeat("x", natskv.MaxNameBytes+1), "h", time.Minute), "bytes long"},
		{"invalid lease name", "lease.claim.ns", claimBody(t, "a.b", "h", time.Minute), "lease name"},
		{"empty holder", "lease.claim.ns", claimBody(t, "l", "", time.Minute), "holder name"},
		{"zero duration", "lease.claim.ns", claimBody(t, "l", "h", 0), "duration"},
		{"negative duration", "lease.claim.ns", claimBody(t, "l", "h", -time.Second), "duration"},
		{"absurd duration", "lease.claim.ns", claimBody(t, "l", "h", 1000*time.Hour), "duration"},
		// Valid protobuf, but beyond what a time.Duration holds: the message
		// names the duration asked for, not a saturated 292 years.
		{"duration beyond time.Duration", "lease.claim.ns", pbDurationClaim(t, 315576000000), "duration 315576000000s"},
		{"negative duration beyond time.Duration", "lease.claim.ns", pbDurationClaim(t, -315576000000), "duration -315576000000s"},
		{"bad namespace escape", "lease.claim.a=ZZ", claimBody(t, "l", "h", time.Minute), "namespace"},
		{"reserved namespace", "lease.claim._owners", claimBody(t, "l", "h", time.Minute), "reserved"},
		{"check of invalid lease", "lease.check.ns", marshal(t, &messages.CheckRequest{Lease: "#", Holder: "h"}), "lease name"},
		{"release by empty holder", "lease.release.ns", marshal(t, &messages.ReleaseRequest{Lease: "l"}), "holder name"},
		{"state of empty lease", "lease.state.ns", nil, "lease name"},
		{"no namespace", "lease.claim", nil, "malformed request subject"},
		{"dotted namespace", "lease.claim.ns.extra", nil, "malformed request subject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := status(t, request(t, nc, tt.subject, tt.data, nil))
			if st.GetCode() != messages.Code_CODE_INVALID_ARGUMENT || !strings.Contains(st.GetMessage(), tt.want) {
				t.Fatalf("status %v %q; want INVALID_ARGUMENT naming %q", st.GetCode(), st.GetMessage(), tt.want)
			}
		})
	}
	// Nothing was claimed, and the agent still serves.
	leases, err := e.Manager.Namespace("ns").Leases(context.Background())
	if err != nil || len(leases) != 0 {
		t.Fatalf("after bad input: leases %v, err %v", leases, err)
	}
	if st := status(t, request(t, nc, "lease.claim.ns", claimBody(t, "l", "h", time.Minute), nil)); st.GetCode() != messages.Code_CODE_OK {
		t.Fatalf("good claim after bad input: %v", st)
	}
}

// A JSON body with a byte that is not UTF-8 where a value belongs gets an
// INVALID_ARGUMENT reply naming the problem, in valid UTF-8 (the parser's
// error quotes the byte), and changes nothing.
func TestNonUTF8JSONBodyGetsANamedError(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	h := nats.Header{protocol.HeaderContentType: []string{protocol.ContentTypeJSON}}
	tests := []struct {
		op   string
		body string
	}{
		{protocol.OpClaim, "{\"lease\":\xff}"},
		{protocol.OpCheck, "{\"lease\":\xff}"},
		{protocol.OpRelease, "{\"lease\":\xff}"},
		{protocol.OpState, "{\"lease\":\xff}"},
		{protocol.OpList, "{\"after\":\xff}"},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			msg := request(t, nc, "lease."+tt.op+".ns", []byte(tt.body), h)
			if !utf8.Valid(msg.Data) {
				t.Fatalf("reply is not UTF-8: %q", msg.Data)
			}
			var r messages.ClaimReply // every reply has its status in field 1
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(msg.Data, &r); err != nil {
				t.Fatalf("reply %q: %v", msg.Data, err)
			}
			if st := r.GetStatus(); st.GetCode() != messages.Code_CODE_INVALID_ARGUMENT || !strings.Contains(st.GetMessage(), "malformed JSON body") {
				t.Fatalf("status %v %q; want INVALID_ARGUMENT naming a malformed JSON body", st.GetCode(), st.GetMessage())
			}
		})
	}
	leases, err := e.Manager.Namespace("ns").Leases(context.Background())
	if err != nil || len(leases) != 0 {
		t.Fatalf("after bad input: leases %v, err %v", leases, err)
	}
}

// An empty body is the request with every field at its default in JSON as
// in protobuf (an empty `nats req` with -H Content-Type:application/json
// lists), so both encodings get the same answer.
func TestEmptyJSONBodyIsTheDefaultRequest(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	h := nats.Header{protocol.HeaderContentType: []string{protocol.ContentTypeJSON}}
	tests := []struct {
		op   string
		body string
		code messages.Code
		want string // in the message
	}{
		{protocol.OpList, "", messages.Code_CODE_OK, ""},
		{protocol.OpList, " \n", messages.Code_CODE_OK, ""},
		{protocol.OpClaim, "", messages.Code_CODE_INVALID_ARGUMENT, "duration is missing"},
		{protocol.OpCheck, "", messages.Code_CODE_INVALID_ARGUMENT, "lease name"},
		{protocol.OpRelease, "", messages.Code_CODE_INVALID_ARGUMENT, "lease name"},
		{protocol.OpState, "", messages.Code_CODE_INVALID_ARGUMENT, "lease name"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %q", tt.op, tt.body), func(t *testing.T) {
			msg := request(t, nc, "lease."+tt.op+".ns", []byte(tt.body), h)
			var r messages.ClaimReply // every reply has its status in field 1
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(msg.Data, &r); err != nil {
				t.Fatalf("reply %q: %v", msg.Data, err)
			}
			if st := r.GetStatus(); st.GetCode() != tt.code || !strings.Contains(st.GetMessage(), tt.want) {
				t.Fatalf("status %v %q, want %v naming %q", st.GetCode(), st.GetMessage(), tt.code, tt.want)
			}
		})
	}
}

// A request on an operation that does not exist finds no responders: the
// agent subscribes to nothing that overlaps its endpoints or the events.
func TestUnknownOperationFindsNoResponders(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	_, err := nc.Request("lease.frobnicate.ns", nil, patience)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request on an unknown operation: %v, want %v", err, nats.ErrNoResponders)
	}
}

// The agent is sent each request once, and no events: a subscription
// overlapping its endpoints would double the messages it reads.
func TestAgentGetsEachRequestOnceAndNoEvents(t *testing.T) {
	e := testenv.Start(t)
	acc := e.Server.NATSServer().GlobalAccount()
	tests := []struct {
		subject string
		want    int
	}{
		{"lease.claim.ns", 1},
		{"lease.check.ns", 1},
		{"lease.list.ns", 1},
		{"lease.release.ns", 1},
		{"lease.state.ns", 1},
		{"lease.expired.ns.l", 0},
		{"lease.claimed.ns.l", 0},
		{"lease.claim", 1},
		{"lease.claim.ns.extra", 1},
	}
	for _, tt := range tests {
		if got := acc.Interest(tt.subject); got != tt.want {
			t.Errorf("%s: %d subscriptions, want %d", tt.subject, got, tt.want)
		}
	}
}

func TestJSONRequestGetsJSONReply(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	h := nats.Header{protocol.HeaderContentType: []string{protocol.ContentTypeJSON}}
	msg := request(t, nc, "lease.claim.ns", []byte(`{"lease":"mysql","holder":"unit/0","duration":"60s"}`), h)
	if msg.Header.Get(protocol.HeaderContentType) != protocol.ContentTypeJSON {
		t.Fatalf("reply content type %q", msg.Header.Get(protocol.HeaderContentType))
	}
	var reply map[string]any
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		t.Fatalf("reply is not JSON: %q", msg.Data)
	}
	if st, _ := reply["status"].(map[string]any); st["code"] != "CODE_OK" {
		t.Fatalf("reply %s", msg.Data)
	}
	msg = request(t, nc, "lease.check.ns", []byte(`{"lease":"mysql","holder":"unit/0","colour":"red"}`), h)
	if !strings.Contains(string(msg.Data), "CODE_INVALID_ARGUMENT") || !strings.Contains(string(msg.Data), "colour") {
		t.Fatalf("unknown JSON field reply %s, want INVALID_ARGUMENT naming the field", msg.Data)
	}
}

// Clients in other languages spell the header as their HTTP habits go:
// header names are case-insensitive there, and media types may carry
// parameters. Each of these asks for JSON and gets a JSON reply.
func TestJSONContentTypeIsRecognisedAsAMediaType(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	tests := []struct {
		name, key, value string
		json             bool
	}{
		{"canonical", "Content-Type", "application/json", true},
		{"lower-case name", "content-type", "application/json", true},
		{"upper-case name", "CONTENT-TYPE", "application/json", true},
		{"charset parameter", "Content-Type", "application/json; charset=utf-8", true},
		{"upper-case value", "Content-Type", "Application/JSON", true},
		{"spaces", "Content-Type", " application/json ", true},
		{"protobuf", "Content-Type", "application/protobuf", false},
		{"json suffix", "Content-Type", "application/jsonx", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := protocol.Encode(&messages.ClaimRequest{Lease: fmt.Sprintf("l%d", i), Holder: "h", Duration: durationpb.New(time.Minute)}, tt.json)
			if err != nil {
				t.Fatal(err)
			}
			msg := request(t, nc, "lease.claim.ns", body, nats.Header{tt.key: []string{tt.value}})
			if got := msg.Header.Get(protocol.HeaderContentType) == protocol.ContentTypeJSON; got != tt.json {
				t.Fatalf("reply content type %q, want JSON: %v", msg.Header.Get(protocol.HeaderContentType), tt.json)
			}
			var r messages.ClaimReply
			if err := protocol.Decode(msg.Data, tt.json, &r); err != nil {
				t.Fatalf("reply %q: %v", msg.Data, err)
			}
			if r.GetStatus().GetCode() != messages.Code_CODE_OK {
				t.Fatalf("status %v", r.GetStatus())
			}
		})
	}
}

func TestReplyCodesMapOntoLeaseErrors(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	if st := status(t, request(t, nc, "lease.claim.ns", claimBody(t, "l", "a", time.Minute), nil)); st.GetCode() != messages.Code_CODE_OK {
		t.Fatal(st)
	}
	tests := []struct {
		name    string
		subject string
		data    []byte
		want    error
	}{
		{"denied", "lease.claim.ns", claimBody(t, "l", "b", time.Minute), lease.ErrClaimDenied},
		{"not held", "lease.check.ns", marshal(t, &messages.CheckRequest{Lease: "l", Holder: "b"}), lease.ErrNotHeld},
		{"release by non-holder", "lease.release.ns", marshal(t, &messages.ReleaseRequest{Lease: "l", Holder: "b"}), lease.ErrNotHeld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := protocol.Err(status(t, request(t, nc, tt.subject, tt.data, nil))); !errors.Is(err, tt.want) {
				t.Fatalf("reply = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestListAndStateReportHolderAndFence(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	request(t, nc, "lease.claim.ns", claimBody(t, "b", "hb", 2*time.Minute), nil)
	request(t, nc, "lease.claim.ns", claimBody(t, "a", "ha", time.Minute), nil)
	var check messages.CheckReply
	if err := proto.Unmarshal(request(t, nc, "lease.check.ns", marshal(t, &messages.CheckRequest{Lease: "a", Holder: "ha"}), nil).Data, &check); err != nil {
		t.Fatal(err)
	}
	if check.GetRevision() == 0 || check.GetKey() != "ns.a" || check.GetBucket() != natskv.DefaultBucket {
		t.Fatalf("check reply %v", &check)
	}
	var list messages.ListReply
	if err := proto.Unmarshal(request(t, nc, "lease.list.ns", nil, nil).Data, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.GetLeases()) != 2 || list.GetLeases()[0].GetLease() != "a" || list.GetLeases()[0].GetRevision() != check.GetRevision() ||
		list.GetLeases()[0].GetExpiresIn().AsDuration() != time.Minute {
		t.Fatalf("list reply %v", &list)
	}
	var state messages.StateReply
	if err := proto.Unmarshal(request(t, nc, "lease.state.ns", marshal(t, &messages.StateRequest{Lease: "b"}), nil).Data, &state); err != nil {
		t.Fatal(err)
	}
	if !state.GetHeld() || state.GetHolder() != "hb" || state.GetExpiresIn().AsDuration() != 2*time.Minute {
		t.Fatalf("state reply %v", &state)
	}
}

// A claim's reply carries the fencing token check reports: the same for
// an extension, a greater one for a claim after a release.
func TestClaimReplyCarriesTheFencingToken(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	claim := func() uint64 {
		t.Helper()
		var out messages.ClaimReply
		if err := proto.Unmarshal(request(t, nc, "lease.claim.ns", claimBody(t, "l", "h", time.Minute), nil).Data, &out); err != nil {
			t.Fatal(err)
		}
		if out.GetStatus().GetCode() != messages.Code_CODE_OK {
			t.Fatalf("claim: %v", out.GetStatus())
		}
		return out.GetRevision()
	}
	first := claim()
	var check messages.CheckReply
	if err := proto.Unmarshal(request(t, nc, "lease.check.ns", marshal(t, &messages.CheckRequest{Lease: "l", Holder: "h"}), nil).Data, &check); err != nil {
		t.Fatal(err)
	}
	if first == 0 || first != check.GetRevision() {
		t.Fatalf("claim reply token %d, check's %d", first, check.GetRevision())
	}
	if got := claim(); got != first {
		t.Fatalf("extension token %d, want the claim's %d", got, first)
	}
	if st := status(t, request(t, nc, "lease.release.ns", marshal(t, &messages.ReleaseRequest{Lease: "l", Holder: "h"}), nil)); st.GetCode() != messages.Code_CODE_OK {
		t.Fatal(st)
	}
	if got := claim(); got <= first {
		t.Fatalf("token after a release %d, want above %d", got, first)
	}
}

func TestServiceIsVisibleToMicroTools(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	msg := request(t, nc, "$SRV.INFO."+agent.ServiceName, nil, nil)
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ep := range info.Endpoints {
		names = append(names, ep.Name+"="+ep.Subject)
	}
	want := "claim=lease.claim.*,check=lease.check.*,list=lease.list.*,release=lease.release.*,state=lease.state.*"
	if info.Name != agent.ServiceName || strings.Join(names, ",") != want {
		t.Fatalf("service %q endpoints %v, want %s", info.Name, names, want)
	}
}

func TestConfigValidate(t *testing.T) {
	e := testenv.Start(t)
	tests := []struct {
		name  string
		cfg   agent.Config
		field string
	}{
		{"no conn", agent.Config{Manager: e.Manager}, "Config.Conn"},
		{"no manager", agent.Config{Conn: e.Conn}, "Config.Manager"},
		{"negative timeout", agent.Config{Conn: e.Conn, Manager: e.Manager, RequestTimeout: -1}, "Config.RequestTimeout"},
		{"negative bound", agent.Config{Conn: e.Conn, Manager: e.Manager, MaxRequestsInflight: -1}, "Config.MaxRequestsInflight"},
		{"negative namespace bound", agent.Config{Conn: e.Conn, Manager: e.Manager, MaxNamespaceRequestsInflight: -1}, "Config.MaxNamespaceRequestsInflight"},
		{"namespace bound above the agent's", agent.Config{Conn: e.Conn, Manager: e.Manager, MaxRequestsInflight: 10, MaxNamespaceRequestsInflight: 11}, "Config.MaxNamespaceRequestsInflight"},
		{"namespace bound above the default", agent.Config{Conn: e.Conn, Manager: e.Manager, MaxNamespaceRequestsInflight: agent.DefaultMaxRequestsInflight + 1}, "Config.MaxNamespaceRequestsInflight"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := agent.Start(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("Start: %v, want an error naming %s", err, tt.field)
			}
		})
	}
}
