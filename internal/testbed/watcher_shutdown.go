package testbed

import (
	"context"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// An instance that shuts itself down is terminated or stopped by EC2,
// according to its InstanceInitiatedShutdownBehavior. The stand-in
// shutdown/poweroff/halt only record the call, so the watcher plays EC2's
// part: when a running host recorded an immediate shutdown, it terminates (or
// stops) the instance in moto, and the host goes down with it as usual.
// Scheduled ones ("shutdown -P +180") stay records: nothing runs them later.

var immediateShutdown = regexp.MustCompile(`^(poweroff|halt)(\s|$)|^shutdown\s(.*\s)?(now|\+0)(\s|$)`)

// isImmediateShutdown reports whether a recorded call powers the host off now.
func isImmediateShutdown(call string) bool {
	call = strings.TrimSpace(call)
	return immediateShutdown.MatchString(call) && !strings.Contains(call, "--help") && !strings.Contains(call, " -c")
}

// applyShutdown checks a running host's shutdown record once per poll.
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
	var call string
	for _, c := range calls {
		if isImmediateShutdown(c) {
			call = c
			break
		}
	}
	if call == "" {
		return
	}
	w.mu.Lock()
	wi.shutdownApplied = true
	w.mu.Unlock()

	client := w.clients[region]
	behavior := w.shutdownBehavior(ctx, client, inst)
	w.logf("watcher: %s: instance %s shut itself down (%q); EC2 would %s it", region, id, call, behavior)
	if behavior == types.ShutdownBehaviorTerminate {
		_, err = client.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	} else {
		_, err = client.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}})
	}
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
