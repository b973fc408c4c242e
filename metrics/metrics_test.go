package metrics_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/leaseagent/lease/metrics"
)

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *metrics.Metrics
	m.Claim("ns", metrics.ClaimGranted)
	m.Request("claim", time.Millisecond)
	m.Refused(metrics.RefusedNamespace, "ns")
	m.LeasesHeld("ns", 3)
	m.Expired("ns")
	m.Released("ns")
	m.Event("claimed", nil)
	m.StoreWrite(time.Millisecond)
	m.Conflict("ns")
	m.OwnerChange("ns")
	m.ActorRestart("ns")
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestEndpoints(t *testing.T) {
	m := metrics.New()
	m.Claim("ns", metrics.ClaimDenied)
	m.Request("claim", 3*time.Millisecond)
	m.Refused(metrics.RefusedNamespace, "ns")
	m.Refused(metrics.RefusedAgent, "any")
	var notReady error = errors.New("not connected to NATS")
	srv, err := metrics.Serve("127.0.0.1:0", m, func() error { return notReady }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	base := "http://" + srv.Addr().String()

	tests := []struct {
		path string
		code int
		want []string
	}{
		{"/healthz", 200, []string{"ok"}},
		{"/readyz", 503, []string{"not connected to NATS"}},
		{"/metrics", 200, []string{
			`leaseagent_claims_total{namespace="ns",result="denied"} 1`,
			`leaseagent_request_duration_seconds_count{operation="claim"} 1`,
			`leaseagent_requests_refused_total{namespace="ns",reason="namespace"} 1`,
			`leaseagent_requests_refused_total{namespace="",reason="agent"} 1`,
			"go_goroutines", "process_resident_memory_bytes",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := get(t, base+tt.path)
			if code != tt.code {
				t.Fatalf("GET %s: %d, want %d: %s", tt.path, code, tt.code, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Fatalf("GET %s: body lacks %q:\n%s", tt.path, w, body)
				}
			}
		})
	}
	notReady = nil
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz once ready: %d", code)
	}
}

func TestServeNamesABusyAddress(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	first, err := metrics.Serve("127.0.0.1:0", nil, func() error { return nil }, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = first.Stop(context.Background()) })
	addr := first.Addr().String()
	if _, err := metrics.Serve(addr, nil, func() error { return nil }, quiet); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("second Serve on %s = %v, want an error naming the address", addr, err)
	}
}
