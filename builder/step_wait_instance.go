package builder

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepWaitInstance waits, under the interruption watcher's context, for the
// instance to run and picks the address SSH connects to. It owns no
// resource: stepFleet terminates the instance.
type stepWaitInstance struct{}

func (s *stepWaitInstance) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	clockOf(state).enter(phaseBoot)
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	ctx, release := watchContext(ctx, state)
	defer release()
	started := time.Now()
	id := getString(state, stateInstanceID)
	if id == "" {
		return halt(state, errors.New("internal error: no instance id in the build state"))
	}
	e.ui.Say(fmt.Sprintf("Waiting for instance %s to run...", id))
	inst, err := waitRunning(ctx, e, id)
	if err != nil {
		if ierr := interruption(state); ierr != nil {
			err = ierr
		}
		return halt(state, err)
	}
	if t := string(inst.InstanceType); t != "" {
		state.Put(stateInstanceType, t)
	}
	if inst.Placement != nil && aws.ToString(inst.Placement.AvailabilityZone) != "" {
		state.Put(stateZone, aws.ToString(inst.Placement.AvailabilityZone))
	}
	host := instanceAddress(inst, e.cfg.SSHInterface)
	if host == "" && e.cfg.UserSSHHost() == "" {
		return halt(state, fmt.Errorf("instance %s has no %s address; set ssh_interface to an address it has (for example private_ip from inside the VPC), or use a subnet_id that assigns public addresses", id, e.cfg.SSHInterface))
	}
	state.Put(stateHost, host)
	recordTiming(state, "instance_running", time.Since(started))
	return multistep.ActionContinue
}

func (s *stepWaitInstance) Cleanup(state multistep.StateBag) { clockOf(state).enter(phaseCleanup) }

// waitRunning waits until the instance runs, polling fast at first (250 ms
// doubling up to poll_interval), for at most state_timeout. An instance
// that stops or terminates instead is an *ErrInterrupted or an
// *ErrInstanceEnded (instanceEnd).
func waitRunning(ctx context.Context, e stepEnv, id string) (types.Instance, error) {
	var inst types.Instance
	var lastErr error
	// The SDK's own rule fails on a stopping instance with a bare "waiter
	// state transitioned to Failure" and gives up on any API error; this one
	// names the reason and lets the id become visible after launch.
	retryable := func(ctx context.Context, _ *ec2.DescribeInstancesInput, out *ec2.DescribeInstancesOutput, err error) (bool, error) {
		if err != nil {
			lastErr = err
			return true, nil
		}
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				if aws.ToString(i.InstanceId) != id || i.State == nil {
					continue
				}
				if err := instanceEnd(i, "", e.cfg); err != nil {
					return false, err
				}
				if i.State.Name == types.InstanceStateNameRunning {
					inst = i
					return false, nil
				}
				lastErr = fmt.Errorf("instance is %s", i.State.Name)
			}
		}
		return true, nil
	}
	poll := pollBackoff(e.cfg)
	waiter := ec2.NewInstanceRunningWaiter(e.ec2, func(o *ec2.InstanceRunningWaiterOptions) {
		o.MinDelay, o.MaxDelay, o.Retryable = poll.InitialBackoff, poll.MaxBackoff, retryable
	})
	_, err := waiter.WaitForOutput(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, e.cfg.StateTimeoutDuration())
	var ierr *ErrInterrupted
	var eerr *ErrInstanceEnded
	switch {
	case errors.As(err, &ierr), errors.As(err, &eerr):
		return types.Instance{}, err
	case ctx.Err() != nil:
		return types.Instance{}, fmt.Errorf("waiting for instance %s: %w", id, context.Cause(ctx))
	case err != nil:
		return types.Instance{}, fmt.Errorf("instance %s did not reach running within state_timeout (%s): %v; raise state_timeout or try again", id, e.cfg.StateTimeoutDuration(), lastErr)
	}
	return inst, nil
}

// instanceAddress picks the address ssh_interface names.
func instanceAddress(inst types.Instance, iface string) string {
	switch iface {
	case "private_ip":
		return aws.ToString(inst.PrivateIpAddress)
	case "public_dns":
		return aws.ToString(inst.PublicDnsName)
	case "private_dns":
		return aws.ToString(inst.PrivateDnsName)
	}
	return aws.ToString(inst.PublicIpAddress)
}
