package testbed

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// An instance that shuts itself down is terminated or stopped by EC2,
// according to its InstanceInitiatedShutdownBehavior. The stand-in
// shutdown/poweroff/halt only record the call, so the watcher plays systemd's
// and EC2's part: it reads each running host's new records once per poll,
// keeps the pending power-off (an immediate one, or one scheduled with
// shutdown's TIME: "+m" minutes, or +1 when none is given; a later schedule
// replaces an earlier one, "shutdown -c" cancels it), and when it is due
// terminates (or stops) the instance in moto with the state reason
// Client.InstanceInitiatedShutdown, as EC2 does; the host goes down with it
// as usual. A test bed minute lasts a minute, or what
// Testbed.SetShutdownMinute says.

type shutdownKind int

const (
	shutdownNone shutdownKind = iota
	shutdownAt
	shutdownCancel
)

// parseShutdown reads one recorded call (shell-quoted argv): a power-off
// after delay minutes, a cancel, or nothing (reboot, --help, a wall message
// only). A TIME the stand-in does not play (hh:mm) is an error.
func parseShutdown(call string) (shutdownKind, int, error) {
	fields := strings.Fields(call)
	if len(fields) == 0 {
		return shutdownNone, 0, nil
	}
	args := fields[1:]
	for _, a := range args {
		if a == "--help" || a == "-k" {
			return shutdownNone, 0, nil
		}
	}
	switch fields[0] {
	case "poweroff", "halt":
		return shutdownAt, 0, nil
	case "shutdown":
	default:
		return shutdownNone, 0, nil
	}
	for _, a := range args {
		a = strings.ReplaceAll(a, `\`, "")
		switch {
		case a == "-c":
			return shutdownCancel, 0, nil
		case strings.HasPrefix(a, "-"):
			continue
		case a == "now":
			return shutdownAt, 0, nil
		case strings.HasPrefix(a, "+"):
			n, err := strconv.Atoi(a[1:])
			if err != nil || n < 0 {
				return shutdownNone, 0, fmt.Errorf("shutdown time %q is not +minutes", a)
			}
			return shutdownAt, n, nil
		default:
			return shutdownNone, 0, fmt.Errorf("shutdown time %q: the test bed plays \"now\" and \"+m\" only", a)
		}
	}
	return shutdownAt, 1, nil
}

// applyShutdown checks a running host's shutdown records once per poll.
func (w *watcher) applyShutdown(ctx context.Context, region string, inst types.Instance) {
	id := aws.ToString(inst.InstanceId)
	w.mu.Lock()
	wi, ok := w.instances[id]
	ready := ok && wi.started && !wi.stopped && !wi.shutdownApplied
	w.mu.Unlock()
	if !ready {
		return
	}
	h, ok := w.pool.Host(id)
	if !ok {
		return
	}
	calls, err := h.ShutdownCalls()
	if err != nil {
		return
	}
	now := time.Now()
	w.mu.Lock()
	for _, c := range calls[min(wi.shutdownSeen, len(calls)):] {
		kind, minutes, err := parseShutdown(c)
		if err != nil {
			w.mu.Unlock()
			w.fail("%s: instance %s: %q: %v", region, id, c, err)
			w.mu.Lock()
			continue
		}
		switch kind {
		case shutdownAt:
			wi.shutdownDue, wi.shutdownCall = now.Add(time.Duration(minutes)*w.minute), c
		case shutdownCancel:
			wi.shutdownDue, wi.shutdownCall = time.Time{}, ""
		}
	}
	wi.shutdownSeen = len(calls)
	call := wi.shutdownCall
	due := call != "" && !now.Before(wi.shutdownDue)
	w.mu.Unlock()
	if !due {
		return
	}
	w.mu.Lock()
	wi.shutdownApplied = true
	w.mu.Unlock()

	client := w.clients[region]
	behavior := w.shutdownBehavior(ctx, client, inst)
	w.logf("watcher: %s: instance %s shut itself down (%q); EC2 would %s it", region, id, call, behavior)
	// EC2's state reason for an instance that powered itself off.
	err = endInstance(ctx, w.motoURL, region, id, "Client.InstanceInitiatedShutdown", behavior != types.ShutdownBehaviorTerminate, "")
	if err != nil && ctx.Err() == nil {
		w.fail("%s: instance %s: applying its shutdown (%s): %v", region, id, behavior, err)
	}
}

// shutdownBehavior is what EC2 does when the instance powers itself off. On
// AWS an instance launched from a launch template takes the template's
// InstanceInitiatedShutdownBehavior. moto does not copy it onto fleet
// instances (it reports "stop") and tags them with nothing that names the
// template, so the watcher follows the fleet that launched the instance to
// its launch template, and reads the value there. Otherwise the instance's own
// attribute applies (EC2's default: stop).
func (w *watcher) shutdownBehavior(ctx context.Context, client *ec2.Client, inst types.Instance) types.ShutdownBehavior {
	id := aws.ToString(inst.InstanceId)
	if spec := w.fleetTemplate(ctx, client, id); spec != nil {
		in := &ec2.DescribeLaunchTemplateVersionsInput{LaunchTemplateId: spec.LaunchTemplateId, LaunchTemplateName: spec.LaunchTemplateName}
		if v := aws.ToString(spec.Version); v != "" {
			in.Versions = []string{v}
		}
		out, err := client.DescribeLaunchTemplateVersions(ctx, in)
		if err == nil && len(out.LaunchTemplateVersions) > 0 && out.LaunchTemplateVersions[0].LaunchTemplateData != nil {
			if b := out.LaunchTemplateVersions[0].LaunchTemplateData.InstanceInitiatedShutdownBehavior; b != "" {
				return types.ShutdownBehavior(b)
			}
		}
	}
	attr, err := client.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: inst.InstanceId,
		Attribute:  types.InstanceAttributeNameInstanceInitiatedShutdownBehavior,
	})
	if err == nil && attr.InstanceInitiatedShutdownBehavior != nil &&
		aws.ToString(attr.InstanceInitiatedShutdownBehavior.Value) == string(types.ShutdownBehaviorTerminate) {
		return types.ShutdownBehaviorTerminate
	}
	return types.ShutdownBehaviorStop
}

// fleetTemplate is the launch template of the EC2 fleet that launched
// instance id, nil when no fleet did.
func (w *watcher) fleetTemplate(ctx context.Context, client *ec2.Client, id string) *types.FleetLaunchTemplateSpecification {
	out, err := client.DescribeFleets(ctx, &ec2.DescribeFleetsInput{})
	if err != nil {
		return nil
	}
	for _, f := range out.Fleets {
		if len(f.LaunchTemplateConfigs) == 0 || f.LaunchTemplateConfigs[0].LaunchTemplateSpecification == nil {
			continue
		}
		holds := false
		for _, fi := range f.Instances {
			for _, iid := range fi.InstanceIds {
				holds = holds || iid == id
			}
		}
		if !holds {
			fis, err := client.DescribeFleetInstances(ctx, &ec2.DescribeFleetInstancesInput{FleetId: f.FleetId})
			if err == nil {
				for _, ai := range fis.ActiveInstances {
					holds = holds || aws.ToString(ai.InstanceId) == id
				}
			}
		}
		if holds {
			return f.LaunchTemplateConfigs[0].LaunchTemplateSpecification
		}
	}
	return nil
}
