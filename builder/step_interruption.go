package builder

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// interruptedCodes are spot request status codes meaning EC2 takes the
// instance away.
var interruptedCodes = []string{
	"instance-terminated-by-price", "marked-for-termination", "instance-terminated-no-capacity",
	"instance-terminated-capacity-oversubscribed", "instance-terminated-launch-group-constraint",
	"marked-for-stop", "instance-stopped-by-price", "instance-stopped-no-capacity",
	"instance-stopped-capacity-oversubscribed", "instance-terminated-by-service",
}

// ErrInterrupted is the build failing because EC2 took the instance away.
type ErrInterrupted struct {
	Reason     string
	InstanceID string
	// Retries is how many times the build had started again (spot_retries).
	Retries int
}

func (e *ErrInterrupted) Error() string {
	again := ""
	if e.Retries > 0 {
		again = fmt.Sprintf(", also after %d retries on new instances (spot_retries = %d)", e.Retries, e.Retries)
	}
	return fmt.Sprintf("the spot instance was interrupted by EC2 (%s)%s; run the build again, raise spot_retries, add instance_types, try another availability_zone, or set on_demand_fallback = true", e.Reason, again)
}

// interruptionWatcher polls the instance while the build runs and cancels
// its context, with an *ErrInterrupted cause, when EC2 takes the instance
// away: the build stops at once instead of waiting on a dead SSH connection.
type interruptionWatcher struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    *ErrInterrupted
}

// Interrupted is the interruption seen, or nil.
func (w *interruptionWatcher) Interrupted() *ErrInterrupted {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *interruptionWatcher) stop() {
	w.cancel(nil)
	w.wg.Wait()
}

// stepInterruption starts the watcher; later steps run under its context
// (watchContext), and its Cleanup stops it before the instance is terminated
// on purpose.
type stepInterruption struct {
	watcher *interruptionWatcher
}

// watchInterval is how often the watcher polls: poll_interval × 3 (6 s by
// default), a few calls a minute.
func watchInterval(cfg *Config) time.Duration { return 3 * cfg.PollIntervalDuration() }

func (s *stepInterruption) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	id := getString(state, stateInstanceID)
	if id == "" {
		return halt(state, errors.New("internal error: no instance id in the build state"))
	}
	wctx, cancel := context.WithCancelCause(ctx)
	w := &interruptionWatcher{ctx: wctx, cancel: cancel}
	s.watcher = w
	state.Put(stateWatcher, w)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.watch(e, id, watchInterval(e.cfg))
	}()
	return multistep.ActionContinue
}

func (w *interruptionWatcher) watch(e stepEnv, id string, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var requestID string
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		if reason := checkInterruption(w.ctx, e, id, &requestID); reason != "" {
			ierr := &ErrInterrupted{Reason: reason, InstanceID: id}
			w.mu.Lock()
			w.err = ierr
			w.mu.Unlock()
			// The step that was running reports it (halt), once.
			log.Printf("[INFO] nixos-sd: %s", ierr)
			w.cancel(ierr)
			return
		}
	}
}

// checkInterruption returns why the instance is gone or going, or "". API
// errors count as "fine": a transient failure must not end the build.
// requestID caches the instance's spot request id between calls.
func checkInterruption(ctx context.Context, e stepEnv, id string, requestID *string) string {
	out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return ""
	}
	for _, r := range out.Reservations {
		for _, inst := range r.Instances {
			if reason := goneReason(inst); reason != "" {
				return reason
			}
			if sir := aws.ToString(inst.SpotInstanceRequestId); sir != "" {
				*requestID = sir
			}
			var reqs []types.SpotInstanceRequest
			switch {
			case *requestID != "":
				sout, err := e.ec2.DescribeSpotInstanceRequests(ctx, &ec2.DescribeSpotInstanceRequestsInput{SpotInstanceRequestIds: []string{*requestID}})
				if err != nil {
					continue
				}
				reqs = sout.SpotInstanceRequests
			case inst.InstanceLifecycle == types.InstanceLifecycleTypeSpot:
				// The instance does not name its request (some EC2
				// emulators): find it among the live requests once.
				sout, err := e.ec2.DescribeSpotInstanceRequests(ctx, &ec2.DescribeSpotInstanceRequestsInput{
					Filters: []types.Filter{{Name: aws.String("state"), Values: []string{"open", "active", "disabled"}}},
				})
				if err != nil {
					continue
				}
				for _, req := range sout.SpotInstanceRequests {
					if aws.ToString(req.InstanceId) == id {
						*requestID = aws.ToString(req.SpotInstanceRequestId)
						reqs = append(reqs, req)
					}
				}
			}
			for _, req := range reqs {
				if req.Status != nil && slices.Contains(interruptedCodes, aws.ToString(req.Status.Code)) {
					return "spot request " + aws.ToString(req.Status.Code)
				}
			}
		}
	}
	return ""
}

// goneReason says why the instance is gone or going (shutting down,
// terminated, stopping or stopped), or "" while it is pending or running.
func goneReason(inst types.Instance) string {
	if inst.State == nil {
		return ""
	}
	switch inst.State.Name {
	case types.InstanceStateNameShuttingDown, types.InstanceStateNameTerminated,
		types.InstanceStateNameStopping, types.InstanceStateNameStopped:
		reason := "instance " + string(inst.State.Name)
		if inst.StateReason != nil && aws.ToString(inst.StateReason.Message) != "" {
			reason += ": " + aws.ToString(inst.StateReason.Message)
		}
		return reason
	}
	return ""
}

func (s *stepInterruption) Cleanup(state multistep.StateBag) {
	if s.watcher != nil {
		s.watcher.stop()
	}
}

// watchContext is ctx, also cancelled when the interruption watcher fires.
// Call release when done.
func watchContext(ctx context.Context, state multistep.StateBag) (context.Context, func()) {
	w, ok := state.Get(stateWatcher).(*interruptionWatcher)
	if !ok || w == nil {
		return ctx, func() {}
	}
	c, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(w.ctx, func() { cancel(context.Cause(w.ctx)) })
	return c, func() { stop(); cancel(nil) }
}

// interruption is the watcher's *ErrInterrupted, if the instance was taken.
func interruption(state multistep.StateBag) error {
	w, ok := state.Get(stateWatcher).(*interruptionWatcher)
	if !ok {
		return nil
	}
	if ierr := w.Interrupted(); ierr != nil {
		return ierr
	}
	return nil
}

// interruptionAfterFailure is the interruption behind a step that failed:
// the watcher's, or what one more look at the instance finds (see doc.go).
// It is nil when the build was cancelled (Ctrl-C) or the instance is fine.
func interruptionAfterFailure(ctx context.Context, e stepEnv, state multistep.StateBag) error {
	if ierr := interruption(state); ierr != nil {
		return ierr
	}
	id := getString(state, stateInstanceID)
	if id == "" || ctx.Err() != nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var requestID string
	if reason := checkInterruption(cctx, e, id, &requestID); reason != "" {
		return &ErrInterrupted{Reason: reason, InstanceID: id}
	}
	return nil
}
