package builder

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
)

// terminateAndWait terminates the instances and waits, up to state_timeout,
// until EC2 reports them terminated: only then are their volumes gone and the
// security group free.
func terminateAndWait(ctx context.Context, e stepEnv, ids []string) error {
	// The ids come from CreateFleet: NotFound means not visible yet.
	notYet := awscommon.NotYetVisible(e.cfg.PollIntervalDuration(), awscommon.CodeInstanceNotFound)
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}, notYet); err != nil {
		return err
	}
	var lastErr error
	// The SDK's rule fails at once on a pending or stopping instance and on
	// any API error, and takes NotFound for terminated; all of those still
	// end in terminated, which EC2 shows for an hour.
	retryable := func(_ context.Context, _ *ec2.DescribeInstancesInput, out *ec2.DescribeInstancesOutput, err error) (bool, error) {
		if err != nil {
			lastErr = err
			return true, nil
		}
		for _, r := range out.Reservations {
			for _, inst := range r.Instances {
				if inst.State == nil || inst.State.Name != types.InstanceStateNameTerminated {
					lastErr = errors.New("not terminated yet")
					return true, nil
				}
			}
		}
		return false, nil
	}
	poll := pollBackoff(e.cfg)
	waiter := ec2.NewInstanceTerminatedWaiter(e.ec2, func(o *ec2.InstanceTerminatedWaiterOptions) {
		o.MinDelay, o.MaxDelay, o.Retryable = poll.InitialBackoff, poll.MaxBackoff, retryable
	})
	if err := waiter.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, e.cfg.StateTimeoutDuration()); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("waited %s for termination: %w", e.cfg.StateTimeoutDuration(), cmp.Or(lastErr, err))
	}
	return nil
}

// deleteFleets deletes the fleets, reporting those it could not; it returns
// whether none is left.
func deleteFleets(ctx context.Context, e stepEnv, fleets []string) bool {
	out, err := e.ec2.DeleteFleets(ctx, &ec2.DeleteFleetsInput{FleetIds: fleets, TerminateInstances: aws.Bool(true)})
	if err != nil {
		if awscommon.ErrorCode(err) != "InvalidFleetId.NotFound" {
			cleanupError(e.ui, "EC2 fleet", strings.Join(fleets, ", "), err)
		}
		return false
	}
	for _, u := range out.UnsuccessfulFleetDeletions {
		if u.Error != nil && u.Error.Code == types.DeleteFleetErrorCodeFleetIdDoesNotExist {
			continue
		}
		msg := "unknown error"
		if u.Error != nil {
			msg = fmt.Sprintf("%s: %s", u.Error.Code, aws.ToString(u.Error.Message))
		}
		cleanupError(e.ui, "EC2 fleet", aws.ToString(u.FleetId), errors.New(msg))
	}
	return true
}
