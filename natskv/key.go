package natskv

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/leaseagent/lease"
)

// MaxNameBytes is the longest namespace or lease name, in bytes, that a
// Client accepts. Escaping can triple a name's length, and a KV key is a NATS
// subject, which must fit comfortably in a protocol line.
const MaxNameBytes = 256

// EscapeName returns the form of a namespace or lease name used in KV keys
// and NATS subjects: one subject token, made only of the characters
// [-_=a-zA-Z0-9].
//
// A name made only of ASCII letters, digits, '-' and '_' is returned as it is.
// Any other byte is written as '=' followed by two upper-case hex digits, so
// "mysql/0" becomes "mysql=2F0". Plain names never contain '=', so the
// escaping is reversible and two names never share an escaped form.
func EscapeName(name string) string {
	if isPlain(name) {
		return name
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(name) * 3)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isPlainByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// UnescapeName reverses EscapeName. It returns an error for any string that
// EscapeName could not have produced.
func UnescapeName(escaped string) (string, error) {
	if escaped == "" {
		return "", fmt.Errorf("escaped name is empty")
	}
	if isPlain(escaped) {
		return escaped, nil
	}
	var b strings.Builder
	b.Grow(len(escaped))
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		switch {
		case isPlainByte(c):
			b.WriteByte(c)
		case c == '=':
			if i+2 >= len(escaped) {
				return "", fmt.Errorf("escaped name %q: truncated escape at byte %d", escaped, i)
			}
			hi, ok1 := unhex(escaped[i+1])
			lo, ok2 := unhex(escaped[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("escaped name %q: bad escape at byte %d", escaped, i)
			}
			v := hi<<4 | lo
			if isPlainByte(v) {
				// EscapeName never escapes a plain byte; accepting it would
				// give one name two escaped forms.
				return "", fmt.Errorf("escaped name %q: needless escape of %q at byte %d", escaped, v, i)
			}
			b.WriteByte(v)
			i += 2
		default:
			return "", fmt.Errorf("escaped name %q: unexpected byte %q at %d", escaped, c, i)
		}
	}
	return b.String(), nil
}

// CheckName returns an error naming what is wrong with a namespace, lease
// or holder name (what says which): it must satisfy lease.ValidateString, be
// valid UTF-8 (it is stored in protobuf strings) and be at most MaxNameBytes
// long.
func CheckName(what, name string) error {
	if err := lease.ValidateString(name); err != nil {
		return fmt.Errorf("invalid %s name: %w", what, err)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("invalid %s name: %q is not valid UTF-8", what, name)
	}
	if len(name) > MaxNameBytes {
		return fmt.Errorf("invalid %s name: %d bytes long, more than the %d allowed", what, len(name), MaxNameBytes)
	}
	return nil
}

func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isPlainByte(s[i]) {
			return false
		}
	}
	return s != ""
}

func isPlainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
