package builder

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

func TestInterruptionCancelsBuild(t *testing.T) {
	cases := map[string]func(f *fakeEC2){
		"instance terminated": func(f *fakeEC2) {
			f.spotLifecycle, f.stateReason = true, reasonSpotTermination
			f.instanceState = func(n int, id string) types.InstanceStateName {
				if n >= 3 {
					return types.InstanceStateNameShuttingDown
				}
				return types.InstanceStateNameRunning
			}
		},
		"spot marked for termination": func(f *fakeEC2) {
			f.instanceSpotR = "sir-12345678"
			f.spotStatus = "marked-for-termination"
		},
		"spot request found by instance id": func(f *fakeEC2) {
			// The instance does not name its request, as in moto.
			f.spotLifecycle = true
			f.spotRequests = []types.SpotInstanceRequest{
				{SpotInstanceRequestId: aws.String("sir-other"), InstanceId: aws.String("i-0ffffffffffffffff"), State: types.SpotInstanceStateActive,
					Status: &types.SpotInstanceStatus{Code: aws.String("marked-for-termination")}},
				{SpotInstanceRequestId: aws.String("sir-mine"), InstanceId: aws.String("i-0123456789abcdef0"), State: types.SpotInstanceStateActive,
					Status: &types.SpotInstanceStatus{Code: aws.String("instance-terminated-by-price")}},
			}
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFakeEC2()
			setup(f)
			cfg := testConfig(t, nil)
			state, _ := testState(cfg, f)
			state.Put(stateInstanceID, "i-0123456789abcdef0")
			s := &stepInterruption{}
			if s.Run(context.Background(), state) != multistep.ActionContinue {
				t.Fatal(stateErr(state))
			}
			defer s.Cleanup(state)
			ctx, release := watchContext(context.Background(), state)
			defer release()
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the build context was not cancelled")
			}
			var ierr *ErrInterrupted
			if !errors.As(context.Cause(ctx), &ierr) {
				t.Fatalf("cause = %v, want *ErrInterrupted", context.Cause(ctx))
			}
			msg := interruption(state).Error()
			if name == "spot request found by instance id" && !strings.Contains(msg, "instance-terminated-by-price") {
				t.Errorf("another instance's request was taken: %s", msg)
			}
			for _, want := range []string{"the spot instance was interrupted by EC2 (", "run the build again", "add instance_types", "another availability_zone", "on_demand_fallback = true"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %q", msg, want)
				}
			}
		})
	}
}

func TestInterruptionQuietWhileRunning(t *testing.T) {
	f := newFakeEC2()
	f.instanceSpotR = "sir-12345678"
	f.spotStatus = "fulfilled"
	cfg := testConfig(t, nil)
	state, _ := testState(cfg, f)
	state.Put(stateInstanceID, "i-0123456789abcdef0")
	s := &stepInterruption{}
	s.Run(context.Background(), state)
	waitFor(t, "a few polls", func() bool { return f.count("DescribeInstances") >= 5 })
	ctx, release := watchContext(context.Background(), state)
	if ctx.Err() != nil || interruption(state) != nil {
		t.Errorf("a healthy instance was reported interrupted: %v", interruption(state))
	}
	release()
	s.Cleanup(state)
	n := f.count("DescribeInstances")
	time.Sleep(20 * time.Millisecond)
	if f.count("DescribeInstances") != n {
		t.Error("the watcher kept polling after cleanup")
	}
}

// TestWatcherReportsOtherEnds: an instance someone terminated stops the
// build too, with an *ErrInstanceEnded (not retried), not an interruption.
func TestWatcherReportsOtherEnds(t *testing.T) {
	f := newFakeEC2()
	f.spotLifecycle, f.stateReason = true, reasonUserShutdown
	f.instanceState = func(n int, id string) types.InstanceStateName {
		if n >= 2 {
			return types.InstanceStateNameTerminated
		}
		return types.InstanceStateNameRunning
	}
	state, _ := testState(testConfig(t, nil), f)
	state.Put(stateInstanceID, "i-0123456789abcdef0")
	s := &stepInterruption{}
	if s.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateErr(state))
	}
	defer s.Cleanup(state)
	ctx, release := watchContext(context.Background(), state)
	defer release()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the build context was not cancelled")
	}
	var eerr *ErrInstanceEnded
	if !errors.As(context.Cause(ctx), &eerr) || eerr.Code != reasonUserShutdown {
		t.Fatalf("cause = %v, want *ErrInstanceEnded with %s", context.Cause(ctx), reasonUserShutdown)
	}
}
