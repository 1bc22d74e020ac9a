package builder

import (
	"fmt"
	"strings"
)

// leftover is an AWS resource a build created and has not removed.
type leftover struct {
	kind    string // "instance", "fleet", "launch template", "security group"
	id      string
	buildID string
	expires string
}

// removeCommand is the AWS CLI command that removes the resource.
func (l leftover) removeCommand(region string) string {
	switch l.kind {
	case "instance":
		return fmt.Sprintf("aws ec2 terminate-instances --region %s --instance-ids %s", region, l.id)
	case "fleet":
		return fmt.Sprintf("aws ec2 delete-fleets --region %s --fleet-ids %s --terminate-instances", region, l.id)
	case "launch template":
		return fmt.Sprintf("aws ec2 delete-launch-template --region %s --launch-template-id %s", region, l.id)
	case "security group":
		return fmt.Sprintf("aws ec2 delete-security-group --region %s --group-id %s", region, l.id)
	}
	return ""
}

// describeLeftovers renders one line per resource with its command, in the
// order they must be removed (instances before the groups they hold).
func describeLeftovers(region string, ls []leftover) string {
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "\n  %s %s", l.kind, l.id)
		if l.buildID != "" {
			fmt.Fprintf(&b, " (build %s", l.buildID)
			if l.expires != "" {
				fmt.Fprintf(&b, ", expired %s", l.expires)
			}
			b.WriteString(")")
		}
		fmt.Fprintf(&b, ": %s", l.removeCommand(region))
	}
	return b.String()
}

// heldResources lists what the build's state still holds, in removal order:
// what -on-error=abort keeps.
func heldResources(state interface{ Get(string) interface{} }) []leftover {
	var ls []leftover
	str := func(k string) string { s, _ := state.Get(k).(string); return s }
	strs := func(k string) []string { s, _ := state.Get(k).([]string); return s }
	buildID := str(stateBuildID)
	for _, id := range strs(stateInstanceIDs) {
		ls = append(ls, leftover{kind: "instance", id: id, buildID: buildID})
	}
	for _, id := range strs(stateFleetIDs) {
		ls = append(ls, leftover{kind: "fleet", id: id, buildID: buildID})
	}
	if id := str(stateLaunchTemplate); id != "" {
		ls = append(ls, leftover{kind: "launch template", id: id, buildID: buildID})
	}
	if id := str(stateSecurityGroupID); id != "" {
		ls = append(ls, leftover{kind: "security group", id: id, buildID: buildID})
	}
	return ls
}
