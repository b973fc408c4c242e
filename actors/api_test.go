package actors_test

// Tests of the Manager's documented API, from outside the package, against
// a real embedded server.

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/leaseagent/lease/actors"
)

func TestConfigValidateNamesBadField(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*actors.Config)
		field string
	}{
		{"nil Conn", func(c *actors.Config) { c.Conn = nil }, "Config.Conn"},
		{"bad Prefix", func(c *actors.Config) { c.Prefix = "a b" }, "Config.Prefix"},
		{"negative MaxSleep", func(c *actors.Config) { c.MaxSleep = -1 }, "Config.MaxSleep"},
		{"negative IdleTimeout", func(c *actors.Config) { c.IdleTimeout = -1 }, "Config.IdleTimeout"},
		{"negative MaxNamespaces", func(c *actors.Config) { c.MaxNamespaces = -1 }, "Config.MaxNamespaces"},
		{"negative MaxDuration", func(c *actors.Config) { c.MaxDuration = -1 }, "Config.MaxDuration"},
		{"negative ClaimRetries", func(c *actors.Config) { c.ClaimRetries = -1 }, "Config.ClaimRetries"},
		{"negative WriteTimeout", func(c *actors.Config) { c.WriteTimeout = -1 }, "Config.WriteTimeout"},
		{"negative ClockDriftRate", func(c *actors.Config) { c.ClockDriftRate = -0.1 }, "Config.ClockDriftRate"},
		{"ClockDriftRate of one", func(c *actors.Config) { c.ClockDriftRate = 1 }, "Config.ClockDriftRate"},
		{"infinite ClockDriftRate", func(c *actors.Config) { c.ClockDriftRate = math.Inf(1) }, "Config.ClockDriftRate"},
		{"NaN ClockDriftRate", func(c *actors.Config) { c.ClockDriftRate = math.NaN() }, "Config.ClockDriftRate"},
		{"invalid Bucket name", func(c *actors.Config) { c.Bucket = "a.b" }, "Config.Bucket"},
		{"negative Replicas", func(c *actors.Config) { c.Replicas = -1 }, "Config.Replicas"},
		{"six Replicas", func(c *actors.Config) { c.Replicas = 6 }, "Config.Replicas"},
		{"unknown Storage", func(c *actors.Config) { c.Storage = 7 }, "Config.Storage"},
		{"control character in WriterID", func(c *actors.Config) { c.WriterID = "a\nb" }, "Config.WriterID"},
		{"DeleteMarkerTTL under a second", func(c *actors.Config) { c.DeleteMarkerTTL = time.Millisecond }, "Config.DeleteMarkerTTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := actors.Config{Conn: new(nats.Conn)}
			tt.edit(&cfg)
			err := cfg.Validate()
			// Named as the caller knows it: a field of actors.Config, not
			// of some config it is copied to.
			if want := "actors: " + tt.field; err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, want)
			}
		})
	}
}
