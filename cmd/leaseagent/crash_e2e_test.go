package main

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonKeepsAcknowledgedWritesAfterKill kills the daemon (SIGKILL,
// default embedded deployment) after the CLI had claims, an extension to a
// longer duration and a release acknowledged, restarts it on the same data
// directory, and finds each write there: the claims with their fencing
// tokens, the extension with its longer duration, the release free.
func TestDaemonKeepsAcknowledgedWritesAfterKill(t *testing.T) {
	dataDir := t.TempDir()
	d := startDaemon(t, dataDir)
	const ns = "crash"

	mustCLI(t, d.url, 0, "claim", ns, "claimed", "a", "1m")
	mustCLI(t, d.url, 0, "claim", ns, "extended", "b", "1m")
	mustCLI(t, d.url, 0, "claim", ns, "extended", "b", "50m") // longer: written
	mustCLI(t, d.url, 0, "claim", ns, "released", "c", "1m")
	tokens := map[string]uint64{
		"claimed":  token(t, d.url, ns, "claimed", "a"),
		"extended": token(t, d.url, ns, "extended", "b"),
	}
	mustCLI(t, d.url, 0, "release", ns, "released", "c")

	d.stop(t, syscall.SIGKILL)
	d2 := startDaemon(t, dataDir)

	// EXPIRES-IN after the restart: the recorded duration from the load.
	expiresIn := make(map[string]time.Duration)
	out, _ := mustCLI(t, d2.url, 0, "leases", ns)
	for _, row := range strings.Split(strings.TrimSuffix(out, "\n"), "\n")[1:] {
		f := strings.Fields(row)
		if len(f) != 4 {
			t.Fatalf("leases printed:\n%s", out)
		}
		left, err := time.ParseDuration(f[2])
		if err != nil {
			t.Fatalf("leases row %q: %v", row, err)
		}
		expiresIn[f[0]] = left
	}
	tests := []struct {
		lease, holder string
		held          bool
		minLeft       time.Duration // least EXPIRES-IN after the restart
	}{
		{"claimed", "a", true, 30 * time.Second},
		{"extended", "b", true, 45 * time.Minute},
		{"released", "c", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.lease, func(t *testing.T) {
			if !tt.held {
				mustCLI(t, d2.url, exitNotHeld, "check", ns, tt.lease, tt.holder)
				if _, ok := expiresIn[tt.lease]; ok {
					t.Errorf("leases lists %s, released before the kill:\n%s", tt.lease, out)
				}
				return
			}
			if got := token(t, d2.url, ns, tt.lease, tt.holder); got != tokens[tt.lease] {
				t.Errorf("after the kill, %s held by %s with token %d, want %d", tt.lease, tt.holder, got, tokens[tt.lease])
			}
			if left := expiresIn[tt.lease]; left < tt.minLeft {
				t.Errorf("after the kill, %s expires in %s, want at least %s", tt.lease, left, tt.minLeft)
			}
		})
	}
	if code := d2.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("restarted daemon: exit code %d after SIGTERM, want 0", code)
	}
}
