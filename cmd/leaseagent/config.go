package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/leaseagent/lease/policy"
)

// The config file (--config FILE, LEASEAGENT_CONFIG) is TOML. Its
// top-level keys are the flags of leaseagent, each named as the flag with
// '_' for '-' (max_duration for --max-duration), and the policy's keys
// (allow_unknown_namespaces and the [namespaces.NAME] tables, see package
// policy). A flag on the command line wins over its environment variable,
// which wins over the file, which wins over the flag's default.
//
// TOML, read with github.com/BurntSushi/toml: the format is made for
// configuration files (comments, typed values, no indentation rules, no
// implicit conversions such as YAML's "no" to false), and the package is
// the Go reference implementation of TOML 1.0, maintained for more than a
// decade, with no dependencies; its parse errors give the line.

// configFlag names the config file.
const configFlag = "config"

// policyKeys are the top-level keys of the file that package policy reads.
var policyKeys = []string{"allow_unknown_namespaces", "namespaces"}

// fileState is what the config file gave: its path (the flag) and the
// policy it declares.
type fileState struct {
	configPath string
	policy     *policy.Policy
}

// addConfigFlag defines --config.
func (a *app) addConfigFlag(fs *pflag.FlagSet) {
	fs.StringVar(&a.configPath, configFlag, "", "TOML config `file`: flags as keys (max_duration = \"5m\") and the namespaces' policy; see docs/leaseagent.example.toml")
}

// applyConfig reads the config file, if one is named, sets from it each
// flag of cmd that the command line and the environment left unset, and
// keeps its policy. It runs after bindEnv, whose Set marks the flags it
// sets as changed.
func (a *app) applyConfig(cmd *cobra.Command) error {
	if a.configPath == "" {
		return nil
	}
	data, err := os.ReadFile(a.configPath)
	if err != nil {
		return usagef(cmd, "--%s: %v", configFlag, err)
	}
	// A spare command tree, bound to an app of its own, on which the values
	// this command does not apply are checked without setting anything.
	spare := newRootCommand(&app{stdout: io.Discard, stderr: io.Discard, lookupEnv: func(string) (string, bool) { return "", false }})
	if err := applyConfig(spare, cmd.Flags(), data); err != nil {
		return usagef(cmd, "config file %s: %v", a.configPath, err)
	}
	if a.policy, err = policy.Parse(data); err != nil {
		return usagef(cmd, "config file %s: %v", a.configPath, err)
	}
	return nil
}

// applyConfig sets each flag of fs that is not changed from its key in
// the TOML data. Every key must be a policy key or the name of a flag of
// some command under root. A key for a flag that fs lacks (listen, for a
// claim) or that the command line or the environment set is not applied,
// but its value is checked all the same, on root's flag of that name: a
// file shared by the daemon and the CLI must not hide a mistake until the
// daemon restarts. root is a spare command tree: setting its flags must
// change nothing that runs.
func applyConfig(root *cobra.Command, fs *pflag.FlagSet, data []byte) error {
	var values map[string]any
	if _, err := toml.Decode(string(data), &values); err != nil {
		return tomlError(err)
	}
	flags := rootFlags(root)
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var errs []error
	for _, key := range keys {
		if slices.Contains(policyKeys, key) {
			continue
		}
		name := strings.ReplaceAll(key, "_", "-")
		spare, known := flags[name]
		if strings.Contains(key, "-") || !known || name == configFlag || !settable(name) {
			errs = append(errs, fmt.Errorf("unknown key %q; keys are flag names with '_' for '-' (%s) and the policy's (%s)",
				key, strings.Join(fileKeys(flags), ", "), strings.Join(policyKeys, ", ")))
			continue
		}
		set, f := fs, fs.Lookup(name)
		if f == nil || f.Changed {
			set, f = spare.set, spare.flag
		}
		if err := setFlag(set, f, values[key]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	return errors.Join(errs...)
}

// setFlag sets a flag from a TOML value: a string, number or boolean, or
// for a flag that can be repeated (such as --auth-nkey) an array of them.
func setFlag(fs *pflag.FlagSet, f *pflag.Flag, value any) error {
	repeatable := strings.HasSuffix(f.Value.Type(), "Array") || strings.HasSuffix(f.Value.Type(), "Slice")
	if list, ok := value.([]any); ok {
		if !repeatable {
			return fmt.Errorf("want one value, not an array")
		}
		for _, v := range list {
			s, err := scalar(v)
			if err != nil {
				return err
			}
			if err := fs.Set(f.Name, s); err != nil {
				return err
			}
		}
		return nil
	}
	s, err := scalar(value)
	if err != nil {
		return err
	}
	return fs.Set(f.Name, s)
}

// scalar returns a TOML string, number or boolean as the flag's text.
func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(v), nil
	default:
		return "", fmt.Errorf("want a string, number or boolean, not %T", v)
	}
}

// namedFlag is a flag and the set it belongs to.
type namedFlag struct {
	set  *pflag.FlagSet
	flag *pflag.Flag
}

// rootFlags returns every flag of root and its subcommands, by name.
func rootFlags(root *cobra.Command) map[string]namedFlag {
	flags := make(map[string]namedFlag)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.PersistentFlags(), c.LocalNonPersistentFlags(), c.Flags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				if _, ok := flags[f.Name]; !ok {
					flags[f.Name] = namedFlag{fs, f}
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return flags
}

// fileKeys returns the flag names that may be keys, as keys, sorted.
func fileKeys(known map[string]namedFlag) []string {
	var keys []string
	for name := range known {
		if name != configFlag && settable(name) {
			keys = append(keys, strings.ReplaceAll(name, "-", "_"))
		}
	}
	slices.Sort(keys)
	return keys
}

// tomlError gives a syntax error of the file with its line.
func tomlError(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("line %d: %s", pe.Position.Line, pe.Message)
	}
	return err
}
