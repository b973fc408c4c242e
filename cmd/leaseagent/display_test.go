package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
)

func TestPrintable(t *testing.T) {
	for _, tc := range []struct {
		in, seps, want string
	}{
		{"mysql/0", "", "mysql/0"},
		{"unit-0", ",", "unit-0"},
		{"é", "", "é"},
		{"x\x1b[2J\x1b[31mEVIL", "", `"x\x1b[2J\x1b[31mEVIL"`},
		{"title\x1b]0;pwned\a", "", `"title\x1b]0;pwned\a"`},
		{"\u202etxt.exe", "", `"\u202etxt.exe"`}, // right-to-left override
		{"zero\u200bwidth", "", `"zero\u200bwidth"`},
		{"bad\xff", "", `"bad\xff"`},
		{"a b", "", `"a b"`},
		{`"quoted"`, "", `"\"quoted\""`}, // not mistaken for the name quoted
		{`a"b`, "", `a"b`},
		{"a,b", ",", `"a,b"`},
		{"a,b", "", "a,b"},
		{"a/b", "/", `"a/b"`},
		{"", "", ""},
		{"-", "", `"-"`}, // not mistaken for a table's "none"
		{"a-b", "", "a-b"},
	} {
		if got := printableSep(tc.in, tc.seps); got != tc.want {
			t.Errorf("printableSep(%q, %q) = %s, want %s", tc.in, tc.seps, got, tc.want)
		}
	}
	if got, want := leaseRef("a/b", "c/d"), `"a/b"/c/d`; got != want {
		t.Errorf("leaseRef = %s, want %s", got, want)
	}
}

func TestEscapeControls(t *testing.T) {
	for in, want := range map[string]string{
		"claim ns/l for h: lease claim denied": "claim ns/l for h: lease claim denied",
		"é and ü":                              "é and ü",
		"x\x1b[2Jy":                            `x\x1b[2Jy`,
		"bell\a tab\t":                         `bell\a tab\t`,
		"bad\xffbyte":                          `bad\xffbyte`,
		"rlo\u202e":                            `rlo\u202e`,
	} {
		if got := escapeControls(in); got != want {
			t.Errorf("escapeControls(%q) = %s, want %s", in, got, want)
		}
	}
}

// Names may hold control characters, so terminal escapes (docs/protocol.md):
// no command prints one raw. leases, status, watch and the error lines
// quote such names; plain names stay plain, a namespace holding ',' is
// quoted in status's OWNS and one holding '/' in watch's ns/lease.
func TestNamesWithControlCharactersAreQuoted(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	const (
		ns     = "ctl,x/y\x1b[2J"       // clears the screen
		evil   = "x\x1b[2J\x1b[31mEVIL" // clears the screen, turns red
		holder = "h\x1b]0;pwned\a"      // sets the terminal's title
		comma  = "a,b"                  // a printable name with the OWNS separator
	)
	watcher := start(t, d.url, "watch", "--log-level", "debug")
	lineContaining(t, watcher.stderr, "msg=watching")

	mustCLI(t, d.url, 0, "claim", ns, evil, holder, "1m")
	mustCLI(t, d.url, 0, "claim", comma, "plain", "unit-0", "1m")
	mustCLI(t, d.url, 0, "claim", "a", "b", "c", "1m")
	var outputs []string

	out, _ := mustCLI(t, d.url, 0, "leases", ns)
	outputs = append(outputs, out)
	if rows := textRows(t, out, "LEASE"); len(rows) != 1 || rows[0][0] != `"x\x1b[2J\x1b[31mEVIL"` || rows[0][1] != `"h\x1b]0;pwned\a"` {
		t.Errorf("leases printed:\n%s", out)
	}

	out, _ = mustCLI(t, d.url, 0, "status")
	outputs = append(outputs, out)
	rows := textRows(t, out, "AGENT")
	if len(rows) != 1 || rows[0][3] != `a,"a,b","ctl,x/y\x1b[2J"` {
		t.Errorf("status OWNS: %q, want the namespaces holding ',' quoted", rows)
	}
	if !strings.Contains(out, "\n"+`"ctl,x/y\x1b[2J"  `) || !strings.Contains(out, "\na  ") {
		t.Errorf("status namespaces not quoted, or plain ones quoted:\n%s", out)
	}

	// JSON carries the names as they are (encoding/json escapes control
	// characters itself).
	out, _ = mustCLI(t, d.url, 0, "status", "--json")
	outputs = append(outputs, out)
	var r statusReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	namespaceRow(t, &r, ns)

	_, stderr := mustCLI(t, d.url, exitNotHeld, "claim", ns, evil, "other", "1m")
	outputs = append(outputs, stderr)
	checkErrorLine(t, stderr, `claim "ctl,x/y\x1b[2J"/"x\x1b[2J\x1b[31mEVIL" for other: lease claim denied`)
	_, stderr = mustCLI(t, d.url, exitNotHeld, "check", ns, evil, "h\x1b[0m")
	outputs = append(outputs, stderr)
	checkErrorLine(t, stderr, `for "h\x1b[0m"`)

	mustCLI(t, d.url, 0, "release", ns, evil, holder)
	// The release's event is the last: the claim's came before it.
	line := lineContaining(t, watcher.stdout, " expired ")
	outputs = append(outputs, line)
	if want := ` expired "ctl,x/y\x1b[2J"/"x\x1b[2J\x1b[31mEVIL" holder="h\x1b]0;pwned\a" revision=`; !strings.Contains(line, want) {
		t.Errorf("watch printed %q, want it to contain %q", line, want)
	}
	if code := watcher.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("watch: exit %d after SIGINT", code)
	}
	for _, o := range append(outputs, watcher.logs.String()) {
		if strings.ContainsAny(o, "\x1b\a") {
			t.Errorf("output with a raw control character: %q", o)
		}
	}
}
