package main

import (
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/leaseagent/lease/agent"
	"github.com/leaseagent/lease/embedded"
)

// ownershipFlags say how this agent shares the bucket's namespaces with
// the other agents on it (package agent, Ownership).
type ownershipFlags struct {
	agentID           string
	ownershipDuration time.Duration
	ownershipRenew    time.Duration
}

func (a *app) addOwnershipFlags(fs *pflag.FlagSet) {
	fs.StringVar(&a.agentID, "agent-id", "", "`name` of this agent among those sharing the bucket: letters, digits, - and _; unique, and best kept across restarts (default: the embedded server's name, or with --nats-url the host name)")
	fs.DurationVar(&a.ownershipDuration, "ownership-duration", agent.DefaultOwnershipDuration, "how long an agent's ownership of a namespace lasts unless renewed: how long a namespace may go unserved after its owner dies")
	fs.DurationVar(&a.ownershipRenew, "ownership-renew", 0, "how often an agent renews its ownerships and looks for namespaces whose owner has gone (default: a third of --ownership-duration)")
}

// ownershipConfig fills in cfg.Ownership from the flags; cfg.ServerName
// and cfg.NATSURL must be set.
func (a *app) ownershipConfig(cmd *cobra.Command, cfg *serveConfig) error {
	id := a.agentID
	if id == "" {
		id = cfg.ServerName
		if id == "" {
			id = embedded.DefaultName
		}
		if cfg.NATSURL != "" {
			host, err := os.Hostname()
			if err != nil {
				return usagef(cmd, "--agent-id is needed: the host name is unknown (%v)", err)
			}
			id = host
		}
		id = agentIDFrom(id)
	}
	cfg.Ownership = agent.Ownership{AgentID: id, Duration: a.ownershipDuration, Renew: a.ownershipRenew}
	if err := cfg.Ownership.Validate(); err != nil {
		return usagef(cmd, "%s", ownershipFlagNames.Replace(err.Error()))
	}
	return nil
}

// ownershipFlagNames turns the fields of agent.Ownership that its Validate
// and agent.Start name into flags; run applies it to every error line.
var ownershipFlagNames = strings.NewReplacer(
	"agent: Ownership.AgentID", "--agent-id",
	"agent: Ownership.Duration", "--ownership-duration",
	"agent: Ownership.Renew", "--ownership-renew",
)

// agentIDFrom makes an agent ID of a host or server name: every character
// an ID may not hold becomes '-', and it is cut to 64.
func agentIDFrom(name string) string {
	id := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, name)
	return id[:min(len(id), 64)]
}
