package policy

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Load reads a policy from a TOML file; see Parse. Errors begin with the
// file's name.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Parse reads a policy from TOML (see the package documentation for the
// format) and validates it. It returns the first syntax or type error, with
// its line, or every rule that Validate refuses and every unknown key in a
// namespace's table. Keys outside allow_unknown_namespaces and the
// namespaces table are ignored.
func Parse(data []byte) (*Policy, error) {
	var f file
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return nil, decodeError(err)
	}
	// A table made only by [namespaces.NAME] headers has no type of its
	// own; anything else but a table is a mistake the toml package lets by.
	if t := md.Type("namespaces"); t != "" && t != "Hash" {
		return nil, fmt.Errorf("policy: namespaces: must be a table of namespaces ([namespaces.NAME]), not %s", strings.ToLower(t))
	}
	var errs []error
	for _, key := range md.Undecoded() {
		if len(key) > 0 && key[0] == "namespaces" {
			errs = append(errs, fmt.Errorf("unknown key %s (want min_duration, max_duration, lease_pattern or holder_pattern)", key))
		}
	}
	p := &Policy{Namespaces: make(map[string]Namespace, len(f.Namespaces))}
	if f.AllowUnknownNamespaces != nil {
		p.DenyUnknown = !*f.AllowUnknownNamespaces
	}
	for name, ns := range f.Namespaces {
		p.Namespaces[name] = Namespace{
			MinDuration: time.Duration(ns.MinDuration),
			MaxDuration: time.Duration(ns.MaxDuration),
			Lease:       ns.LeasePattern.p,
			Holder:      ns.HolderPattern.p,
		}
	}
	if err := p.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return p, nil
}

// file is the policy's part of a TOML file.
type file struct {
	AllowUnknownNamespaces *bool                     `toml:"allow_unknown_namespaces"`
	Namespaces             map[string]namespaceTable `toml:"namespaces"`
}

type namespaceTable struct {
	MinDuration   duration     `toml:"min_duration"`
	MaxDuration   duration     `toml:"max_duration"`
	LeasePattern  patternValue `toml:"lease_pattern"`
	HolderPattern patternValue `toml:"holder_pattern"`
}

// duration is a time.Duration written as a Go duration string. Unlike
// time.Duration in the toml package, a bare integer is an error rather than
// nanoseconds.
type duration time.Duration

func (d *duration) UnmarshalTOML(value any) error {
	s, ok := value.(string)
	if !ok {
		return fmt.Errorf("want a Go duration string such as \"30s\" or \"5m\", not %s %v", tomlType(value), value)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q: want a Go duration such as \"30s\" or \"5m\"", s)
	}
	*d = duration(v)
	return nil
}

// patternValue is a Pattern written as a string.
type patternValue struct{ p *Pattern }

func (v *patternValue) UnmarshalTOML(value any) error {
	s, ok := value.(string)
	if !ok {
		return fmt.Errorf("want a regular expression as a string, not %s %v", tomlType(value), value)
	}
	p, err := NewPattern(s)
	if err != nil {
		return err
	}
	v.p = p
	return nil
}

// tomlType names the TOML type of a decoded value, for errors.
func tomlType(v any) string {
	switch v.(type) {
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case []any, []map[string]any:
		return "array"
	case map[string]any:
		return "table"
	default:
		return "value"
	}
}

// decodeError turns an error of the toml package into one that starts
// with the line and names the key.
func decodeError(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		if pe.LastKey != "" {
			return fmt.Errorf("policy: line %d: %s: %s", pe.Position.Line, pe.LastKey, pe.Message)
		}
		return fmt.Errorf("policy: line %d: %s", pe.Position.Line, pe.Message)
	}
	msg := strings.TrimPrefix(err.Error(), "toml: ")
	if m := lastKey.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("line %s: %s: %s", m[1], m[2], m[3])
	}
	return fmt.Errorf("policy: %s", msg)
}

// lastKey matches the toml package's other errors, "line N (last key
// "KEY"): MESSAGE".
var lastKey = regexp.MustCompile(`^line (\d+) \(last key "([^"]*)"\): (.*)$`)
