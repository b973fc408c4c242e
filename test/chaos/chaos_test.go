package chaos

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	chaosDuration = flag.Duration("chaos.duration", 0,
		"run TestChaosLong for this long (it is skipped if zero; `make chaos` sets it)")
	chaosSeed = flag.Uint64("chaos.seed", 0,
		"replay this seed (also CHAOS_SEED=N); 0 means the fixed seeds plus a random one")
)

// shortSeeds are the fixed seeds of TestChaosShort; a random one is added
// to them on every run.
var shortSeeds = []uint64{1, 2}

// shortDuration is how long TestChaosShort runs the workload per seed.
const shortDuration = 20 * time.Second

// The agent binaries, built once per test process, by build tags.
var (
	buildMu  sync.Mutex
	binDir   string
	binaries = map[string]string{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// agentBinary builds `leaseagent` with the given build tags (once) and
// returns its path.
func agentBinary(t *testing.T, tags string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := binaries[tags]; ok {
		return bin
	}
	if binDir == "" {
		dir, err := os.MkdirTemp("", "leaseagent-chaos-")
		if err != nil {
			t.Fatal(err)
		}
		binDir = dir
	}
	bin := filepath.Join(binDir, "leaseagent"+strings.ReplaceAll(tags, ",", "-"))
	args := []string{"build", "-o", bin}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "github.com/leaseagent/lease/cmd/leaseagent")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	binaries[tags] = bin
	return bin
}

// agentEnv is this process's environment without anything that would
// configure the agent or turn on a fault, plus extra.
func agentEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LEASEAGENT_") && !strings.HasPrefix(kv, "NATSKV_FAULTINJECT=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// startAgent starts an agent on a fresh data directory; it is killed when
// the test ends, and its log shown if the test failed.
func startAgent(t *testing.T, bin string, env []string) *Agent {
	t.Helper()
	dir := t.TempDir()
	a, err := StartAgent(bin, filepath.Join(dir, "data"), filepath.Join(dir, "agent.log"), env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Close()
		if t.Failed() {
			t.Logf("the agent's log ends:\n%s", a.LogTail(40))
		}
	})
	return a
}

// runAndCheck runs the workload against a fresh agent and checks the
// history.
func runAndCheck(t *testing.T, bin string, env []string, cfg RunConfig) Report {
	t.Helper()
	cfg.Agent = startAgent(t, bin, env)
	cfg.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+2*time.Minute)
	defer cancel()
	h, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	rep := Check(h, cfg.CheckConfig())
	t.Logf("seed %d: %s", cfg.Seed, rep.Stats)
	return rep
}

// requireNoViolations fails the test with the slices of history that break
// an invariant, if any.
func requireNoViolations(t *testing.T, rep Report) {
	t.Helper()
	for _, v := range rep.Violations {
		t.Errorf("%s", v)
	}
	if !rep.OK() {
		t.Errorf("violations found, by invariant 1-5: %v (up to %d of each shown)", rep.Found[1:], DefaultMaxPerInvariant)
	}
}

// requireActivity fails the test if the run did too little to mean
// anything.
func requireActivity(t *testing.T, s Stats, d time.Duration) {
	t.Helper()
	secs := int(d / time.Second)
	for _, m := range []struct {
		what      string
		got, want int
	}{
		{"successful claims", s.ClaimsOK, 5 * secs},
		{"holder changes", s.HolderChanges, secs},
		{"checks that said held", s.ChecksHeld, 5 * secs},
		{"successful releases", s.Released, secs},
		{"waits that returned", s.WaitsOK, secs / 2},
		{"waits held to their bound", s.WaitsBoundChecked, 1},
	} {
		if m.got < m.want {
			t.Errorf("only %d %s in %v, want at least %d", m.got, m.what, d, m.want)
		}
	}
}

// replaySeed returns the seed asked for by -chaos.seed or CHAOS_SEED, if any.
func replaySeed(t *testing.T) (uint64, bool) {
	t.Helper()
	if *chaosSeed != 0 {
		return *chaosSeed, true
	}
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", s, err)
		}
		return seed, true
	}
	return 0, false
}

// TestChaosShort is the CI form: the workload with faults for
// shortDuration under each fixed seed and one random seed.
func TestChaosShort(t *testing.T) {
	bin := agentBinary(t, "")
	seeds := append([]uint64(nil), shortSeeds...)
	if seed, ok := replaySeed(t); ok {
		seeds = []uint64{seed}
	} else {
		seed := rand.Uint64()
		t.Logf("random seed %d; replay it with CHAOS_SEED=%d go test -race -run TestChaosShort ./test/chaos", seed, seed)
		seeds = append(seeds, seed)
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rep := runAndCheck(t, bin, agentEnv(), RunConfig{Seed: seed, Duration: shortDuration, Faults: true})
			requireNoViolations(t, rep)
			requireActivity(t, rep.Stats, shortDuration)
			if rep.Stats.Faults < 3 {
				t.Errorf("only %d faults injected in %v", rep.Stats.Faults, shortDuration)
			}
		})
	}
}

// TestChaosLong is the long form that `make chaos` runs: one seed (random
// unless -chaos.seed or CHAOS_SEED says) for -chaos.duration. It is skipped
// unless -chaos.duration is set: it is an opt-in soak, and TestChaosShort
// runs the same code in every `go test`.
func TestChaosLong(t *testing.T) {
	if *chaosDuration <= 0 {
		t.Skip("the long form runs only with -chaos.duration (make chaos)")
	}
	seed, ok := replaySeed(t)
	if !ok {
		seed = rand.Uint64()
	}
	t.Logf("seed %d; replay it with CHAOS_SEED=%d make chaos CHAOS_DURATION=%v", seed, seed, *chaosDuration)
	rep := runAndCheck(t, agentBinary(t, ""), agentEnv(), RunConfig{Seed: seed, Duration: *chaosDuration, Faults: true})
	requireNoViolations(t, rep)
	requireActivity(t, rep.Stats, *chaosDuration)
}

// TestCheckerCatchesBrokenAgent runs the workload, without faults, against
// an agent built with -tags faultinject and NATSKV_FAULTINJECT=early-expiry,
// whose leases expire after half their duration, and requires the checker
// to see claims granted inside another holder's guarantee (invariant 1) or
// tokens out of order (invariant 2).
func TestCheckerCatchesBrokenAgent(t *testing.T) {
	bin := agentBinary(t, "faultinject")
	const d = 8 * time.Second
	rep := runAndCheck(t, bin, agentEnv("NATSKV_FAULTINJECT=early-expiry"), RunConfig{Seed: 7, Duration: d})
	if rep.Found[1]+rep.Found[2] == 0 {
		t.Fatalf("the checker found no violation of invariant 1 or 2 in a broken agent's history (found, by invariant 1-5: %v)", rep.Found[1:])
	}
	for _, v := range rep.Violations {
		if v.Invariant <= 2 {
			t.Logf("found, by invariant 1-5: %v; the first of invariant 1 or 2:\n%s", rep.Found[1:], v)
			break
		}
	}
}
