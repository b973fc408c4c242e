package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Names of namespaces, leases and holders may hold any character but white
// space, '.', '#' and '$' (docs/protocol.md): control characters too, and
// so terminal escapes. Human-readable output prints every name through
// printable or printableSep, and error lines pass through escapeControls,
// so that nothing a client named reaches the operator's terminal raw.

// printable returns a name as the CLI prints it: as it is if it is valid
// UTF-8 made of printable, non-space characters, does not begin with a
// double quote and is not "-" (which tables print for "none"); otherwise
// quoted as a Go string ("x\x1b[2J"). Plain names stay plain, and a quoted
// name cannot be mistaken for a plain one. The
// names of NATS servers, versions and the like, which anyone who can
// answer on NATS can choose, are printed the same way.
func printable(s string) string { return printableSep(s, "") }

// printableSep is printable that also quotes a name holding any of seps:
// the separators of where it is printed (',' in a list of names, '/'
// between a namespace and a lease).
func printableSep(s, seps string) string {
	if needsQuoting(s, seps) {
		return strconv.Quote(s)
	}
	return s
}

func needsQuoting(s, seps string) bool {
	if !utf8.ValidString(s) || strings.HasPrefix(s, `"`) || s == "-" || strings.ContainsAny(s, seps) {
		return true
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return true
		}
	}
	return false
}

// leaseRef returns "namespace/lease" as the CLI prints it: the namespace is
// quoted if it holds a '/', so the first '/' outside quotes ends it.
func leaseRef(ns, leaseName string) string {
	return printableSep(ns, "/") + "/" + printable(leaseName)
}

// escapeControls returns s with every character that is not printable (a
// control character, an invalid byte) written as a Go escape (\x1b,
// \u200e): a last guard for error lines, which may carry text from the
// agent, the NATS server or the operating system.
func escapeControls(s string) string {
	clean := utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
	if clean {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case !unicode.IsPrint(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[:size])
		}
		s = s[size:]
	}
	return b.String()
}
