package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runHoldExample runs examples/hold.sh as host against natsURL, with the
// built leaseagent and a hostname(1) that answers host first on its PATH,
// and the extra environment variables.
func runHoldExample(t *testing.T, natsURL, host string, extra ...string) (stdout, stderr string, code int) {
	t.Helper()
	shims := t.TempDir()
	hostname := "#!/bin/sh\necho '" + host + "'\n"
	if err := os.WriteFile(filepath.Join(shims, "hostname"), []byte(hostname), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "examples", "hold.sh"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	path := shims + string(os.PathListSeparator) + filepath.Dir(leaseagentBinary(t)) + string(os.PathListSeparator) + os.Getenv("PATH")
	cmd.Env = append(baseEnv(), "PATH="+path, "LEASEAGENT_NATS_URL="+natsURL)
	cmd.Env = append(cmd.Env, extra...)
	return runCommandOutput(t, cmd, "examples/hold.sh as "+host)
}

// examples/hold.sh runs its job on one host only: the record that it ran
// is in the shared file NIGHTLY_JOB_STAMP, so the host that gets the lease
// next finds it; without one the script refuses to run rather than keep
// the record where only its own host would see it.
func TestHoldExampleRunsTheJobOnce(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	stdout, stderr, code := runHoldExample(t, d.url, "host-a")
	if code == 0 || strings.Contains(stdout, "running") || !strings.Contains(stderr, "NIGHTLY_JOB_STAMP") {
		t.Fatalf("hold.sh without NIGHTLY_JOB_STAMP: exit %d, stdout %q, stderr %q; want it to refuse, naming NIGHTLY_JOB_STAMP", code, stdout, stderr)
	}

	stamp := "NIGHTLY_JOB_STAMP=" + filepath.Join(t.TempDir(), "nightly-job.done")
	for _, run := range []struct{ host, want string }{
		{"host-a", "running the nightly job on host-a\n"},
		{"host-b", "nightly job already ran today\n"},
		{"host-a", "nightly job already ran today\n"},
	} {
		stdout, stderr, code := runHoldExample(t, d.url, run.host, stamp)
		if code != 0 || stdout != run.want {
			t.Fatalf("hold.sh on %s: exit %d, stdout %q, stderr %q; want 0 and %q", run.host, code, stdout, stderr, run.want)
		}
	}
	if out, _ := mustCLI(t, d.url, 0, "leases", "cron"); strings.Contains(out, "nightly-job") {
		t.Errorf("the lease is still held after the script:\n%s", out)
	}
}
