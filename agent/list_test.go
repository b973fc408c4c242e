package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/leaseagent/lease/actors"
	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/client"
	"github.com/leaseagent/lease/embedded"
	"github.com/leaseagent/lease/internal/testenv"
	"github.com/leaseagent/lease/messages"
	"github.com/leaseagent/lease/natskv"
	"github.com/leaseagent/lease/protocol"
)

// claimAll claims count leases l000, l001, ... of namespace ns through m,
// from 32 goroutines, and returns their names in order.
func claimAll(t *testing.T, m *actors.Manager, ns string, count int) []string {
	t.Helper()
	names := make([]string, count)
	for i := range names {
		names[i] = fmt.Sprintf("l%0*d", max(3, len(fmt.Sprint(count-1))), i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < count; i += 32 {
				if err := m.Namespace(ns).ClaimContext(context.Background(), names[i], "holder", time.Hour); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return names
}

func TestListIsPagedByLimit(t *testing.T) {
	e := testenv.Start(t)
	want := claimAll(t, e.Manager, "ns", 5)
	nc := e.Connect(t)
	var got []string
	after := ""
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatalf("more pages than leases; so far %v", got)
		}
		msg := request(t, nc, "lease.list.ns", marshal(t, &messages.ListRequest{After: after, Limit: 2}), nil)
		var out messages.ListReply
		if err := proto.Unmarshal(msg.Data, &out); err != nil {
			t.Fatal(err)
		}
		if len(out.GetLeases()) > 2 {
			t.Fatalf("page of %d leases with limit 2", len(out.GetLeases()))
		}
		for _, l := range out.GetLeases() {
			got = append(got, l.GetLease())
		}
		if out.GetNext() == "" {
			break
		}
		if out.GetNext() != got[len(got)-1] {
			t.Fatalf("next = %q, want the page's last lease %q", out.GetNext(), got[len(got)-1])
		}
		after = out.GetNext()
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages gave %v, want %v", got, want)
	}
}

// maxPayload is the server's max payload in the tests of list pages.
const maxPayload = 16 * 1024

// smallPayloadAgent starts a server with a max payload of maxPayload, a
// Manager and an agent on it; all end with the test.
func smallPayloadAgent(t *testing.T) (*embedded.Server, *nats.Conn, *actors.Manager) {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Port: -1, DataDir: t.TempDir(), NoSync: true, MaxPayload: maxPayload})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc := connect(t, srv)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := actors.New(context.Background(), actors.Config{Conn: nc, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
	svc, err := agent.Start(agent.Config{Conn: nc, Manager: m, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	return srv, nc, m
}

// A namespace too large for one message is listed a page at a time, each
// within the server's max payload, in protobuf and in JSON, and the client
// joins the pages.
func TestListPagesFitTheMaxPayload(t *testing.T) {
	srv, _, m := smallPayloadAgent(t)
	want := claimAll(t, m, "ns", 600) // about 40 KB of lease infos

	for _, json := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", json), func(t *testing.T) {
			var header nats.Header
			if json {
				header = nats.Header{protocol.HeaderContentType: []string{protocol.ContentTypeJSON}}
			}
			body, err := protocol.Encode(&messages.ListRequest{}, json)
			if err != nil {
				t.Fatal(err)
			}
			msg := request(t, connect(t, srv), "lease.list.ns", body, header)
			var out messages.ListReply
			if json {
				err = protojson.Unmarshal(msg.Data, &out)
			} else {
				err = proto.Unmarshal(msg.Data, &out)
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.GetStatus().GetCode() != messages.Code_CODE_OK || out.GetNext() == "" || len(out.GetLeases()) == 0 {
				t.Fatalf("first page: status %v, %d leases, next %q; want part of the leases and a next", out.GetStatus(), len(out.GetLeases()), out.GetNext())
			}
			if len(msg.Data) > maxPayload {
				t.Fatalf("page of %d bytes, over the max payload %d", len(msg.Data), maxPayload)
			}
		})
	}
	c, err := client.New(connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	leases, err := c.Namespace("ns").Leases(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range leases {
		got = append(got, l.Lease)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("client listed %d leases (first %v), want all %d in order", len(got), got[:min(3, len(got))], len(want))
	}
}

// A lease past its expiry is not held, even while its removal has not
// reached the store (here: it cannot, JetStream is gone): list leaves it
// out, as state says it is not held.
func TestListLeavesOutLeasesPastTheirExpiry(t *testing.T) {
	e := testenv.Start(t)
	nc := e.Connect(t)
	request(t, nc, "lease.claim.ns", claimBody(t, "gone", "h", time.Minute), nil)
	request(t, nc, "lease.claim.ns", claimBody(t, "kept", "h", time.Hour), nil)
	if err := e.Server.NATSServer().DisableJetStream(); err != nil {
		t.Fatal(err)
	}
	e.Clock.Advance(2 * time.Minute)
	var state messages.StateReply
	if err := proto.Unmarshal(request(t, nc, "lease.state.ns", marshal(t, &messages.StateRequest{Lease: "gone"}), nil).Data, &state); err != nil {
		t.Fatal(err)
	}
	if state.GetStatus().GetCode() != messages.Code_CODE_OK || state.GetHeld() {
		t.Fatalf("state of a lease past its expiry: %v, want OK and not held", &state)
	}
	var list messages.ListReply
	if err := proto.Unmarshal(request(t, nc, "lease.list.ns", nil, nil).Data, &list); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range list.GetLeases() {
		got = append(got, l.GetLease())
		if l.GetExpiresIn().AsDuration() < 0 {
			t.Errorf("lease %q listed with expires_in %v", l.GetLease(), l.GetExpiresIn().AsDuration())
		}
	}
	if list.GetStatus().GetCode() != messages.Code_CODE_OK || !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("list: status %v, leases %v; want OK and only the lease still held", list.GetStatus(), got)
	}
}

// Names that JSON must escape (a control character becomes six bytes,
// \u0001) make a JSON page far larger than its protobuf: every page still
// fits the max payload, so every list request is answered, in either
// encoding.
func TestListPagesOfEscapedNamesFitTheMaxPayload(t *testing.T) {
	_, nc, m := smallPayloadAgent(t)
	tests := []struct {
		name string
		ctl  string // what fills the lease and holder names
	}{
		{"control-characters", "\x01"},
		{"quotes", `"`},
		{"non-ASCII", "é"},
	}
	for _, tt := range tests {
		var want []string
		for i := range 40 {
			name := fmt.Sprintf("%03d", i) + strings.Repeat(tt.ctl, (natskv.MaxNameBytes-3)/len(tt.ctl))
			if err := m.Namespace(tt.name).ClaimContext(context.Background(), name, strings.Repeat(tt.ctl, natskv.MaxNameBytes/len(tt.ctl)), time.Hour); err != nil {
				t.Fatal(err)
			}
			want = append(want, name)
		}
		for _, json := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/json=%v", tt.name, json), func(t *testing.T) {
				var header nats.Header
				if json {
					header = nats.Header{protocol.HeaderContentType: []string{protocol.ContentTypeJSON}}
				}
				var got []string
				after := ""
				for page := 0; ; page++ {
					if page > len(want) {
						t.Fatalf("more pages than leases; so far %d leases", len(got))
					}
					body, err := protocol.Encode(&messages.ListRequest{After: after}, json)
					if err != nil {
						t.Fatal(err)
					}
					msg := request(t, nc, protocol.RequestSubject(protocol.DefaultPrefix, protocol.OpList, tt.name), body, header)
					var out messages.ListReply
					if err := protocol.Decode(msg.Data, json, &out); err != nil {
						t.Fatal(err)
					}
					if out.GetStatus().GetCode() != messages.Code_CODE_OK || len(msg.Data) > maxPayload {
						t.Fatalf("page %d: status %v, %d bytes", page, out.GetStatus(), len(msg.Data))
					}
					for _, l := range out.GetLeases() {
						got = append(got, l.GetLease())
					}
					if out.GetNext() == "" {
						break
					}
					after = out.GetNext()
				}
				if !slices.Equal(got, want) {
					t.Fatalf("pages gave %d leases, want %d", len(got), len(want))
				}
			})
		}
	}
}

// listPage asks for one page of namespace ns and returns its lease names
// and its next, failing the test unless the status is OK.
func listPage(t *testing.T, nc *nats.Conn, ns, after string, limit uint32) ([]string, string) {
	t.Helper()
	var out messages.ListReply
	msg := request(t, nc, protocol.RequestSubject(protocol.DefaultPrefix, protocol.OpList, ns), marshal(t, &messages.ListRequest{After: after, Limit: limit}), nil)
	if err := proto.Unmarshal(msg.Data, &out); err != nil {
		t.Fatal(err)
	}
	if out.GetStatus().GetCode() != messages.Code_CODE_OK {
		t.Fatalf("list after %q, limit %d: %v", after, limit, out.GetStatus())
	}
	var names []string
	for _, l := range out.GetLeases() {
		names = append(names, l.GetLease())
	}
	return names, out.GetNext()
}

// pageCase is a list request, after and limit, and the page it should
// get: its leases and next.
type pageCase struct {
	name  string
	after string
	limit uint32
	want  []string
	next  string
}

// A page starts after any name, present or not, holds at most limit
// leases in the order of their names' UTF-8 bytes, and has a next (its
// last lease) exactly when more follow.
func TestListPageBoundaries(t *testing.T) {
	e := testenv.Start(t)
	for _, name := range []string{"😀", "z", "a", "Ｚ", "ab", "é", "B"} {
		if err := e.Manager.Namespace("ns").ClaimContext(context.Background(), name, "h", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	nc := e.Connect(t)
	all := []string{"B", "a", "ab", "z", "é", "Ｚ", "😀"}
	for _, tt := range []pageCase{
		{"no limit", "", 0, all, ""},
		{"limit larger than the namespace", "", 100, all, ""},
		{"limit the size of the namespace", "", uint32(len(all)), all, ""},
		{"limit 1", "", 1, all[:1], "B"},
		{"after a name present", "a", 2, []string{"ab", "z"}, "z"},
		{"after a name not present", "b", 0, []string{"z", "é", "Ｚ", "😀"}, ""},
		{"non-ASCII names by their bytes", "z", 2, []string{"é", "Ｚ"}, "Ｚ"},
		{"a page that ends with the namespace", "é", 2, []string{"Ｚ", "😀"}, ""},
		{"after the last", "😀", 1, nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, next := listPage(t, nc, "ns", tt.after, tt.limit)
			if !slices.Equal(got, tt.want) || next != tt.next {
				t.Fatalf("page %q, next %q; want %q, next %q", got, next, tt.want, tt.next)
			}
		})
	}
}

// Without a limit, or with one larger than fits, a page holds as many
// leases as fit under the max payload: adding the first lease of the next
// page would not fit.
func TestListPageHoldsAsManyAsFit(t *testing.T) {
	_, nc, m := smallPayloadAgent(t)
	// The smallest names there are: 26 of one letter, 676 of two.
	for i := range 26 + 26*26 {
		name := string(rune('a' + i%26))
		if i >= 26 {
			name = string(rune('a'+(i-26)/26)) + name
		}
		if err := m.Namespace("ns").ClaimContext(context.Background(), name, "h", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for _, limit := range []uint32{0, 100000} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			var out messages.ListReply
			msg := request(t, nc, "lease.list.ns", marshal(t, &messages.ListRequest{Limit: limit}), nil)
			if err := proto.Unmarshal(msg.Data, &out); err != nil {
				t.Fatal(err)
			}
			if out.GetNext() == "" {
				t.Fatalf("one page of %d leases holds the whole namespace; the test needs more than fit", len(out.GetLeases()))
			}
			used := 0
			for _, l := range out.GetLeases() {
				used += proto.Size(l) + 4
			}
			var rest messages.ListReply
			msg = request(t, nc, "lease.list.ns", marshal(t, &messages.ListRequest{After: out.GetNext(), Limit: 1}), nil)
			if err := proto.Unmarshal(msg.Data, &rest); err != nil || len(rest.GetLeases()) != 1 {
				t.Fatalf("the page after %q: %v, err %v", out.GetNext(), &rest, err)
			}
			if room := maxPayload - 4096; used+proto.Size(rest.GetLeases()[0])+4 <= room {
				t.Fatalf("a page of %d leases uses %d of %d bytes; the next lease would have fit", len(out.GetLeases()), used, room)
			}
		})
	}
}

// A page longer than the chunks the agent asks of the namespace's actor
// (agent.ListChunk leases) joins them: every lease once, in order, with a
// next exactly when more follow.
func TestListPageSpansChunks(t *testing.T) {
	e := testenv.Start(t)
	const chunk = agent.ListChunk
	names := claimAll(t, e.Manager, "ns", 2*chunk+100)
	nc := e.Connect(t)
	for _, tt := range []pageCase{
		{"no limit: the whole namespace fits", "", 0, names, ""},
		{"limit ends inside the second chunk", "", chunk + 904, names[:chunk+904], names[chunk+903]},
		{"limit two chunks exactly", "", 2 * chunk, names[:2*chunk], names[2*chunk-1]},
		{"after a name, to the end", names[99], 0, names[100:], ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, next := listPage(t, nc, "ns", tt.after, tt.limit)
			if !slices.Equal(got, tt.want) || next != tt.next {
				t.Fatalf("page of %d leases (%v ... %v), next %q; want %d, next %q",
					len(got), got[:min(2, len(got))], got[max(0, len(got)-2):], next, len(tt.want), tt.next)
			}
		})
	}
}
