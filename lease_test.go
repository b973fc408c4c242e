package lease_test

import (
	"testing"
	"time"

	"github.com/leaseagent/lease"
)

func TestValidateString(t *testing.T) {
	tests := []struct {
		name  string
		input string
		ok    bool
	}{
		{"letters", "mysql", true},
		{"digits", "0123", true},
		{"slash", "mysql/0", true},
		{"colon", "machine:3", true},
		{"dash and underscore", "a-b_c", true},
		{"unicode", "lïlle-ñame-日本", true},
		{"empty", "", false},
		{"space", "a b", false},
		{"tab", "a\tb", false},
		{"newline", "a\n", false},
		{"non-breaking space", "a\u00a0b", false},
		{"dot", "a.b", false},
		{"hash", "#a", false},
		{"dollar", "a$", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := lease.ValidateString(tt.input)
			if tt.ok && err != nil {
				t.Fatalf("ValidateString(%q) = %v, want nil", tt.input, err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("ValidateString(%q) = nil, want an error", tt.input)
			}
		})
	}
}

func TestRequestValidate(t *testing.T) {
	tests := []struct {
		name    string
		request lease.Request
		ok      bool
	}{
		{"valid", lease.Request{Holder: "mysql/0", Duration: time.Minute}, true},
		{"one nanosecond", lease.Request{Holder: "h", Duration: 1}, true},
		{"empty holder", lease.Request{Holder: "", Duration: time.Minute}, false},
		{"invalid holder", lease.Request{Holder: "a.b", Duration: time.Minute}, false},
		{"zero duration", lease.Request{Holder: "h", Duration: 0}, false},
		{"negative duration", lease.Request{Holder: "h", Duration: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.request.Validate()
			if tt.ok && err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("Validate() = nil, want an error")
			}
		})
	}
}

func TestLockedTrapdoor(t *testing.T) {
	tests := []struct {
		name string
		key  interface{}
		ok   bool
	}{
		{"nil key", nil, true},
		{"string key", "key", false},
		{"pointer key", new(int), false},
		{"typed nil pointer", (*int)(nil), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := lease.LockedTrapdoor(tt.key)
			if tt.ok && err != nil {
				t.Fatalf("LockedTrapdoor(%#v) = %v, want nil", tt.key, err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("LockedTrapdoor(%#v) = nil, want an error", tt.key)
			}
		})
	}
}

// The seed's Trapdoor type must accept LockedTrapdoor.
var _ lease.Trapdoor = lease.LockedTrapdoor
