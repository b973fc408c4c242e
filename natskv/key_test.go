package natskv_test

import (
	"strings"
	"testing"

	"github.com/leaseagent/lease"
	"github.com/leaseagent/lease/natskv"
)

func TestEscapeName(t *testing.T) {
	tests := []struct {
		name, want string
	}{
		{"mysql", "mysql"},
		{"a-b_C9", "a-b_C9"},
		{"mysql/0", "mysql=2F0"},
		{"machine:3", "machine=3A3"},
		{"a=b", "a=3Db"},
		{"é", "=C3=A9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := natskv.EscapeName(tt.name)
			if got != tt.want {
				t.Fatalf("EscapeName(%q) = %q, want %q", tt.name, got, tt.want)
			}
			back, err := natskv.UnescapeName(got)
			if err != nil || back != tt.name {
				t.Fatalf("UnescapeName(%q) = %q, %v; want %q", got, back, err, tt.name)
			}
		})
	}
}

func TestUnescapeNameRejects(t *testing.T) {
	for _, s := range []string{"", "a.b", "=", "=4", "=zz", "=41", "a b", "=2f"} {
		t.Run(s, func(t *testing.T) {
			if got, err := natskv.UnescapeName(s); err == nil {
				t.Fatalf("UnescapeName(%q) = %q, nil; want an error", s, got)
			}
		})
	}
}

const (
	plainChars = "-_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	tokenChars = plainChars + "=" // a key token: a KV key character other than '.' and '/'
)

// FuzzEscapeName proves, for every name ValidateString accepts, that the
// escaped form is one KV key token, unescapes to the name, leaves plain names
// alone, and is shared with no other name.
func FuzzEscapeName(f *testing.F) {
	for _, s := range []string{"mysql", "mysql/0", "=41", "a=b", "日本", "x\x00y", "\xff"} {
		f.Add(s, s+"/")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, name := range []string{a, b} {
			if lease.ValidateString(name) != nil {
				return
			}
		}
		ea, eb := natskv.EscapeName(a), natskv.EscapeName(b)
		for _, c := range ea {
			if !strings.ContainsRune(tokenChars, c) {
				t.Fatalf("EscapeName(%q) = %q has %q, not allowed in a key token", a, ea, c)
			}
		}
		back, err := natskv.UnescapeName(ea)
		if err != nil || back != a {
			t.Fatalf("UnescapeName(EscapeName(%q)) = %q, %v", a, back, err)
		}
		if strings.Trim(a, plainChars) == "" && ea != a {
			t.Fatalf("EscapeName(%q) = %q; plain names must stay as they are", a, ea)
		}
		if (ea == eb) != (a == b) {
			t.Fatalf("EscapeName(%q) = %q and EscapeName(%q) = %q", a, ea, b, eb)
		}
	})
}
