package builder

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/communicator"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepWaitInstance waits for the instance to run, picks the address to
// connect to, then connects with Packer's own SSH step. Both run under the
// interruption watcher's context, so a spot interruption ends the wait at
// once.
type stepWaitInstance struct {
	connect *communicator.StepConnect
}

func (s *stepWaitInstance) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
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
	state.Put(stateInstance, inst)
	if t := string(inst.InstanceType); t != "" {
		state.Put(stateInstanceType, t)
	}
	if inst.Placement != nil && aws.ToString(inst.Placement.AvailabilityZone) != "" {
		state.Put(stateZone, aws.ToString(inst.Placement.AvailabilityZone))
	}
	host := instanceAddress(inst, e.cfg.SSHInterface)
	if host == "" && e.cfg.Comm.SSHHost == "" {
		return halt(state, fmt.Errorf("instance %s has no %s address; set ssh_interface to an address it has (for example private_ip from inside the VPC), or use a subnet_id that assigns public addresses", id, e.cfg.SSHInterface))
	}
	state.Put(stateHost, host)
	recordTiming(state, "instance_running", time.Since(started))

	connStarted := time.Now()
	cfg := e.cfg
	s.connect = &communicator.StepConnect{
		Config:    &cfg.Comm,
		Host:      hostFunc(cfg),
		SSHConfig: cfg.Comm.SSHConfigFunc(),
	}
	action := s.connect.Run(ctx, state)
	if ierr := interruption(state); ierr != nil {
		return halt(state, ierr)
	}
	if action == multistep.ActionHalt {
		if _, ok := state.GetOk("error"); !ok {
			if ctx.Err() != nil {
				state.Put("error", fmt.Errorf("cancelled while connecting with SSH: %w", context.Cause(ctx)))
			} else {
				state.Put("error", errors.New("connecting with SSH failed; check ssh_source_cidrs and that this machine can reach the instance"))
			}
		}
		return action
	}
	recordTiming(state, "connect", time.Since(connStarted))
	return action
}

// hostFunc is where SSH connects: ssh_host when the user set it, else the
// address ssh_interface picked.
func hostFunc(cfg *Config) func(multistep.StateBag) (string, error) {
	return func(state multistep.StateBag) (string, error) {
		if cfg.Comm.SSHHost != "" {
			return cfg.Comm.SSHHost, nil
		}
		if h := getString(state, stateHost); h != "" {
			return h, nil
		}
		return "", errors.New("no address to connect to yet")
	}
}

// waitRunning polls until the instance runs, fast at first (250 ms doubling
// up to poll_interval), for at most state_timeout.
func waitRunning(ctx context.Context, e stepEnv, id string) (types.Instance, error) {
	deadline := time.Now().Add(e.cfg.StateTimeoutDuration())
	bo := newBackoff(e.cfg.PollIntervalDuration())
	var lastErr error
	for {
		out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		switch {
		case err != nil:
			// Right after launch the id may not be visible yet.
			lastErr = err
		default:
			for _, r := range out.Reservations {
				for _, inst := range r.Instances {
					if aws.ToString(inst.InstanceId) != id || inst.State == nil {
						continue
					}
					switch inst.State.Name {
					case types.InstanceStateNameRunning:
						return inst, nil
					case types.InstanceStateNameShuttingDown, types.InstanceStateNameTerminated,
						types.InstanceStateNameStopping, types.InstanceStateNameStopped:
						reason := "instance " + string(inst.State.Name)
						if inst.StateReason != nil && aws.ToString(inst.StateReason.Message) != "" {
							reason += ": " + aws.ToString(inst.StateReason.Message)
						}
						return inst, &ErrInterrupted{Reason: reason}
					}
					lastErr = fmt.Errorf("instance is %s", inst.State.Name)
				}
			}
		}
		if time.Now().After(deadline) {
			return types.Instance{}, fmt.Errorf("instance %s did not reach running within state_timeout (%s): %v; raise state_timeout or try again", id, e.cfg.StateTimeoutDuration(), lastErr)
		}
		if err := sleep(ctx, bo.Next()); err != nil {
			return types.Instance{}, fmt.Errorf("waiting for instance %s: %w", id, context.Cause(ctx))
		}
	}
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

func (s *stepWaitInstance) Cleanup(state multistep.StateBag) {
	if s.connect != nil {
		s.connect.Cleanup(state)
	}
}
