package policy_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leaseagent/lease/policy"
)

func TestParseErrorsNameTheProblem(t *testing.T) {
	for _, tc := range []struct {
		name string
		toml string
		want []string // each must be in the error
	}{
		{"max below min", "[namespaces.x]\nmin_duration = \"5s\"\nmax_duration = \"1s\"\n",
			[]string{`namespace "x": max_duration 1s is below min_duration 5s`}},
		{"bad lease pattern", "[namespaces.x]\nlease_pattern = '(['\n",
			[]string{"line 2", "namespaces.x.lease_pattern", "bad regular expression", "missing closing ]"}},
		{"bad holder pattern", "\n\n[namespaces.x]\nholder_pattern = 'a{2,1}'\n",
			[]string{"line 4", "namespaces.x.holder_pattern", "invalid repeat count"}},
		{"pattern that escapes its anchors", "[namespaces.x]\nlease_pattern = 'app-[0-9]+)|(.*'\n",
			[]string{"line 2", "namespaces.x.lease_pattern", "bad regular expression", "unexpected )"}},
		{"empty pattern", "[namespaces.x]\nholder_pattern = ''\n",
			[]string{"line 2", "namespaces.x.holder_pattern", "empty regular expression"}},
		{"pattern not a string", "[namespaces.x]\nlease_pattern = 5\n",
			[]string{"line 2", "namespaces.x.lease_pattern", "not integer 5"}},
		{"integer duration", "[namespaces.x]\nmin_duration = 5\n",
			[]string{"line 2", "namespaces.x.min_duration", "not integer 5"}},
		{"bad duration", "[namespaces.x]\nmax_duration = \"5 minutes\"\n",
			[]string{"line 2", "namespaces.x.max_duration", `bad duration "5 minutes"`}},
		{"negative duration", "[namespaces.x]\nmin_duration = \"-1s\"\n",
			[]string{`namespace "x": min_duration -1s is negative`}},
		{"unknown key", "[namespaces.x]\nmax_duratoin = \"5s\"\n",
			[]string{"unknown key namespaces.x.max_duratoin"}},
		{"bad allow", "allow_unknown_namespaces = \"yes\"\n",
			[]string{"line 1", "allow_unknown_namespaces", "boolean"}},
		{"namespaces not a table", "namespaces = 5\n",
			[]string{"namespaces: must be a table", "integer"}},
		{"namespace not a table", "[namespaces]\nx = 5\n",
			[]string{"line 2", "namespaces.x"}},
		{"bad namespace name", "[namespaces.\"a.b\"]\n",
			[]string{`namespace "a.b"`, "invalid namespace name"}},
		{"syntax", "a = 1\nb = = 2\n",
			[]string{"line 2"}},
		{"several at once", "[namespaces.a]\nmin_duration = \"2s\"\nmax_duration = \"1s\"\n[namespaces.b]\nmin_duration = \"-1s\"\nfoo = 1\n",
			[]string{`namespace "a": max_duration 1s is below min_duration 2s`, `namespace "b": min_duration -1s is negative`, "unknown key namespaces.b.foo"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.Parse([]byte(tc.toml))
			if err == nil {
				t.Fatalf("Parse = %+v, nil; want an error", p)
			}
			if p != nil {
				t.Errorf("Parse returned a policy with its error")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestParseIgnoresOtherKeys(t *testing.T) {
	p, err := policy.Parse([]byte("listen = \"127.0.0.1:4222\"\n[metrics]\nlisten = \":9090\"\n[namespaces.x]\nmax_duration = \"1m\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.DenyUnknown || p.Namespaces["x"].MaxDuration != time.Minute {
		t.Errorf("Parse = %+v", p)
	}
}

// juju is the example file's policy, as Go.
func juju() *policy.Policy {
	return &policy.Policy{Namespaces: map[string]policy.Namespace{
		"application-leadership": {
			MinDuration: 5 * time.Second,
			MaxDuration: 5 * time.Minute,
			Lease:       policy.MustPattern(`^[a-z][a-z0-9-]*$`),
			Holder:      policy.MustPattern(`^[a-z][a-z0-9-]*/[0-9]+$`),
		},
		"singular-controller": {MinDuration: time.Second, MaxDuration: time.Minute},
	}}
}

func TestExampleFile(t *testing.T) {
	p, err := policy.Load(filepath.Join("..", "docs", "leaseagent.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	want := juju()
	if p.DenyUnknown != want.DenyUnknown || len(p.Namespaces) != len(want.Namespaces) {
		t.Fatalf("Load = %+v, want %+v", p, want)
	}
	for name, w := range want.Namespaces {
		g, ok := p.Namespaces[name]
		if !ok || g.MinDuration != w.MinDuration || g.MaxDuration != w.MaxDuration ||
			g.Lease.String() != w.Lease.String() || g.Holder.String() != w.Holder.String() {
			t.Errorf("namespace %q = %+v, want %+v", name, g, w)
		}
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(path, []byte("[namespaces.x]\nmin_duration = 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Load(path); err == nil || !strings.HasPrefix(err.Error(), path+": policy: line 2") {
		t.Errorf("Load = %v, want an error starting with the path and line", err)
	}
	if _, err := policy.Load(filepath.Join(t.TempDir(), "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file = %v, want os.ErrNotExist", err)
	}
}

func TestChecks(t *testing.T) {
	deny := juju()
	deny.DenyUnknown = true
	const (
		al = "application-leadership"
		sc = "singular-controller"
	)
	type check struct {
		ns, lease, holder string
		d                 time.Duration
	}
	for _, tc := range []struct {
		name   string
		policy *policy.Policy
		check  check
		want   string // "" = allowed
	}{
		{"nil allows all", nil, check{"any", "L", "H", time.Hour}, ""},
		{"zero allows all", &policy.Policy{}, check{"any", "L", "H", time.Hour}, ""},
		{"juju ok", juju(), check{al, "mysql", "mysql/0", time.Minute}, ""},
		{"at the minimum", juju(), check{al, "mysql", "mysql/0", 5 * time.Second}, ""},
		{"at the maximum", juju(), check{al, "mysql", "mysql/0", 5 * time.Minute}, ""},
		{"below the minimum", juju(), check{al, "mysql", "mysql/0", time.Second},
			`namespace "application-leadership": duration 1s is below the minimum 5s`},
		{"above the maximum", juju(), check{al, "mysql", "mysql/0", 6 * time.Minute},
			`namespace "application-leadership": duration 6m0s is above the maximum 5m0s`},
		{"bad lease", juju(), check{al, "MySQL", "mysql/0", time.Minute},
			`namespace "application-leadership": lease name "MySQL" does not match lease_pattern ^[a-z][a-z0-9-]*$`},
		{"lease partly matching", juju(), check{al, "mysql/0", "mysql/0", time.Minute}, `lease name "mysql/0" does not match`},
		{"bad holder", juju(), check{al, "mysql", "mysql", time.Minute},
			`namespace "application-leadership": holder name "mysql" does not match holder_pattern ^[a-z][a-z0-9-]*/[0-9]+$`},
		{"no patterns", juju(), check{sc, "Anything", "Any/one", 30 * time.Second}, ""},
		{"singular too long", juju(), check{sc, "x", "y", 2 * time.Minute}, "duration 2m0s is above the maximum 1m0s"},
		{"unknown allowed", juju(), check{"other", "x", "y", 59 * time.Minute}, ""},
		{"unknown denied", deny, check{"other", "x", "y", time.Minute},
			`namespace "other": not allowed`},
		{"known with deny", deny, check{sc, "x", "y", time.Minute}, ""},
		{"unanchored pattern is whole-name", &policy.Policy{Namespaces: map[string]policy.Namespace{"n": {Lease: policy.MustPattern("[a-z]+")}}},
			check{"n", "ab1", "h", time.Minute}, `lease name "ab1" does not match lease_pattern [a-z]+`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.CheckClaim(tc.check.ns, tc.check.lease, tc.check.holder, tc.check.d)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckClaim = %v, want nil", err)
				}
				return
			}
			var v *policy.Violation
			if !errors.As(err, &v) || v.Namespace != tc.check.ns {
				t.Fatalf("CheckClaim = %#v, want a *Violation in namespace %q", err, tc.check.ns)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckClaim = %q, want it to contain %q", err, tc.want)
			}
		})
	}

	// The narrower checks agree with CheckClaim.
	if err := deny.CheckNamespace("other"); err == nil {
		t.Error("CheckNamespace of an unknown namespace under DenyUnknown = nil")
	}
	if err := deny.CheckLease(al, "Bad"); err == nil {
		t.Error("CheckLease of a bad lease name = nil")
	}
	if err := deny.CheckHolder(al, "mysql/0"); err != nil {
		t.Errorf("CheckHolder of a good holder = %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    *policy.Policy
		want string
	}{
		{"nil", nil, ""},
		{"juju", juju(), ""},
		{"max below min", &policy.Policy{Namespaces: map[string]policy.Namespace{"x": {MinDuration: 5 * time.Second, MaxDuration: time.Second}}},
			`namespace "x": max_duration 1s is below min_duration 5s`},
		{"negative max", &policy.Policy{Namespaces: map[string]policy.Namespace{"x": {MaxDuration: -time.Second}}},
			`namespace "x": max_duration -1s is negative`},
		{"bad name", &policy.Policy{Namespaces: map[string]policy.Namespace{"": {}}}, `namespace "": invalid namespace name`},
		{"zero pattern", &policy.Policy{Namespaces: map[string]policy.Namespace{"x": {Holder: &policy.Pattern{}}}}, "NewPattern"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCheckMaxDuration(t *testing.T) {
	if err := juju().CheckMaxDuration(time.Hour); err != nil {
		t.Errorf("juju under 1h: %v", err)
	}
	err := juju().CheckMaxDuration(2 * time.Minute)
	if err == nil || !strings.Contains(err.Error(), `namespace "application-leadership": max_duration 5m0s is above the global max_duration 2m0s`) {
		t.Errorf("juju under 2m: %v", err)
	}
	err = juju().CheckMaxDuration(time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), `namespace "singular-controller": max_duration 1m0s is above`) {
		t.Errorf("juju under 1ms: %v", err)
	}
}

func TestPattern(t *testing.T) {
	if _, err := policy.NewPattern("(["); err == nil || !strings.Contains(err.Error(), `"(["`) {
		t.Errorf("NewPattern of a bad expression = %v", err)
	}
	p := policy.MustPattern("a|ab")
	if !p.Match("ab") || p.Match("abc") || p.String() != "a|ab" {
		t.Errorf("a|ab: Match(ab)=%v Match(abc)=%v String=%q", p.Match("ab"), p.Match("abc"), p)
	}
	var nilPattern *policy.Pattern
	if !nilPattern.Match("anything") {
		t.Error("a nil Pattern must match everything")
	}
}
