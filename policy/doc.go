// Package policy says, per namespace, which leases a lease manager accepts:
// how long a claim may be, which lease and holder names are allowed, and
// whether namespaces nobody declared may be used at all.
//
// A Policy is read from a TOML file (Load, Parse) or built in Go, and
// checked by the lease manager (actors.Config.Policy) before a request
// reaches a namespace's actor. A request that breaks it gets an error
// naming the rule, for example
//
//	namespace "application-leadership": duration 1s is below the minimum 5s
//
// and changes nothing.
//
// # File format
//
//	# Namespaces not declared below are allowed (the default) and take the
//	# agent's global limits: a duration in (0, --max-duration].
//	allow_unknown_namespaces = true
//
//	[namespaces.application-leadership]
//	min_duration   = "5s"
//	max_duration   = "5m"
//	lease_pattern  = '^[a-z][a-z0-9-]*$'
//	holder_pattern = '^[a-z][a-z0-9-]*/[0-9]+$'
//
//	[namespaces.singular-controller]
//	min_duration = "1s"
//	max_duration = "1m"
//
// Every key of a namespace is optional. Durations are Go duration strings
// ("90s", "5m"); patterns are Go regular expressions (RE2 syntax), best
// written as TOML literal strings in single quotes so that backslashes stay
// as they are. A namespace name that is not a plain TOML key (one with
// characters other than letters, digits, '-' and '_') is quoted:
// [namespaces."a/b"]. A table names one namespace exactly, byte for byte:
// there are no namespace patterns, so [namespaces."app-*"] declares the
// namespace named app-*, and a name spelt another way in Unicode (NFC
// against NFD) is another namespace.
//
// Parse reads only the keys above. Other top-level keys and tables are left
// to the program that reads the same file (leaseagent keeps its daemon
// settings there), which should reject those it does not know; unknown
// keys inside a namespace's table are an error here.
//
// # Guarantees
//
//   - A pattern must match the whole name: it is compiled as ^(?:PATTERN)$,
//     so "[a-z]+" does not accept "ab1".
//   - Errors name what is wrong. Syntax errors, a duration or pattern that
//     does not parse and a value of the wrong type give the line and key;
//     errors that involve several keys (max_duration below min_duration) and
//     unknown keys name the namespace and key.
//   - A nil *Policy allows everything: each Check method of a nil *Policy
//     returns nil. A Policy is not changed by its methods and is safe for
//     concurrent use once built.
//
// # Limits
//
// A Policy only narrows what the lease manager accepts: the manager's own
// checks (valid names, a duration in (0, MaxDuration]) still apply, and a
// namespace's max_duration may not exceed the manager's MaxDuration
// (actors.Config.Validate refuses it). A Policy decides on names and
// durations only; it does not know who is asking. Restricting who may
// use a namespace is the job of NATS subject permissions (see
// docs/security.md).
package policy
