package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func httpGet(t *testing.T, url string) (int, string) {
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

// The daemon serves metrics and health when asked, and logs lease changes
// as JSON lines at info.
func TestMetricsHealthAndJSONLogs(t *testing.T) {
	port, metricsPort := freePort(t), freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	p := start(t, "", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", t.TempDir(),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", metricsPort), "--log-format", "json")
	nextLine(t, p.stdout, "ready line")
	base := fmt.Sprintf("http://127.0.0.1:%d", metricsPort)

	if code, body := httpGet(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	mustCLI(t, url, 0, "claim", "ns", "l", "h", "30s")
	mustCLI(t, url, 0, "claim", "ns", "l", "h", "30s")
	mustCLI(t, url, 1, "claim", "ns", "l", "other", "30s")
	_, body := httpGet(t, base+"/metrics")
	for _, want := range []string{
		`leaseagent_claims_total{namespace="ns",result="granted"} 1`,
		`leaseagent_claims_total{namespace="ns",result="extended"} 1`,
		`leaseagent_claims_total{namespace="ns",result="denied"} 1`,
		`leaseagent_leases_held{namespace="ns"} 1`,
		`leaseagent_request_duration_seconds_count{operation="claim"} 3`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// One JSON line at info for the claim, none for the extension.
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("daemon exited %d", code)
	}
	claimed := 0
	for _, line := range strings.Split(strings.TrimSpace(p.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		switch rec["msg"] {
		case "lease claimed":
			claimed++
			if rec["namespace"] != "ns" || rec["lease"] != "l" || rec["holder"] != "h" || rec["level"] != "INFO" {
				t.Errorf("claim logged as %v", rec)
			}
		case "lease extended":
			t.Errorf("extension logged at %v", rec["level"])
		}
	}
	if claimed != 1 {
		t.Fatalf("%d claim log lines, want 1:\n%s", claimed, p.logs.String())
	}
}

func TestLogFormatIsChecked(t *testing.T) {
	if _, stderr, code := cli(t, "nats://127.0.0.1:1", "--log-format", "xml", "leases", "ns"); code != exitUsage || !strings.Contains(stderr, "--log-format") {
		t.Fatalf("--log-format xml: exit %d, stderr %q", code, stderr)
	}
}

func TestServeLimitFlagsAreChecked(t *testing.T) {
	for _, args := range [][]string{
		{"--max-namespaces", "0"},
		{"--idle-timeout", "0s"},
		{"--delete-marker-ttl", "500ms"},
		{"--max-requests-inflight", "0"},
		{"--max-namespace-requests-inflight", "-1"},
	} {
		if _, stderr, code := cli(t, "", append([]string{"serve", "--data-dir", t.TempDir()}, args...)...); code != exitUsage || !strings.Contains(stderr, args[0]) {
			t.Errorf("serve %v: exit %d, stderr %q; want %d naming the flag", args, code, stderr, exitUsage)
		}
	}
}

// A bucket name or a metrics address that cannot work is a usage error,
// found before serve starts anything: the data directory is not created.
func TestServeNameAndAddressFlagsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		flag, value string
	}{
		{"--bucket", "bad bucket"},
		{"--bucket", "a.b"},
		{"--metrics-listen", "nonsense"},
		{"--metrics-listen", "127.0.0.1:70000"},
	} {
		t.Run(tc.flag+"="+tc.value, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			_, stderr, code := cli(t, "", "serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, tc.flag, tc.value)
			if code != exitUsage || !strings.Contains(stderr, tc.flag) {
				t.Errorf("serve %s %q: exit %d, stderr %q; want %d naming the flag", tc.flag, tc.value, code, stderr, exitUsage)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("serve %s %q left its data directory behind (stat: %v)", tc.flag, tc.value, err)
			}
		})
	}
}

// A --prefix that is not a subject prefix is a usage error naming it, for
// every command, found before anything starts: serve does not create its
// data directory, and status and watch do not try to connect.
func TestPrefixIsChecked(t *testing.T) {
	for _, prefix := range []string{"", "a b", "a.>", "lease.*", ".lease"} {
		for _, args := range [][]string{
			{"serve", "--listen", "127.0.0.1:0"},
			{"status"},
			{"watch"},
			{"leases", "ns"},
		} {
			t.Run(fmt.Sprintf("%s/%q", args[0], prefix), func(t *testing.T) {
				dataDir := filepath.Join(t.TempDir(), "data")
				natsURL := "nats://127.0.0.1:1"
				args := append(slices.Clone(args), "--prefix", prefix)
				if args[0] == "serve" {
					natsURL, args = "", append(args, "--data-dir", dataDir)
				}
				_, stderr, code := cli(t, natsURL, args...)
				if code != exitUsage || !strings.Contains(stderr, "--prefix") {
					t.Errorf("%s --prefix %q: exit %d, stderr %q; want %d naming --prefix", args[0], prefix, code, stderr, exitUsage)
				}
				if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s --prefix %q left a data directory behind (stat: %v)", args[0], prefix, err)
				}
			})
		}
	}
}
