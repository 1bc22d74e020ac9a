package builder

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

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
// its context when the instance stops or terminates: with an
// *ErrInterrupted cause when EC2 takes a spot instance back, an
// *ErrInstanceEnded for any other reason (instance_end.go). The build stops
// at once instead of waiting on a dead SSH connection.
type interruptionWatcher struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

// Ended is why the instance ended (*ErrInterrupted or *ErrInstanceEnded),
// or nil.
func (w *interruptionWatcher) Ended() error {
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
	clockOf(state).enter(phaseLaunch)
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
		if err := checkInstanceEnd(w.ctx, e, id, &requestID); err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			// The step that was running reports it (halt), once.
			log.Printf("[INFO] nixos-sd: %s", err)
			w.cancel(err)
			return
		}
	}
}

// checkInstanceEnd returns why the instance is gone or going (see
// instanceEnd), or nil. API errors count as "fine": a transient failure must
// not end the build. requestID caches the instance's spot request id
// between calls.
func checkInstanceEnd(ctx context.Context, e stepEnv, id string, requestID *string) error {
	out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return nil
	}
	for _, r := range out.Reservations {
		for _, inst := range r.Instances {
			if aws.ToString(inst.InstanceId) != id {
				continue
			}
			status := ""
			if inst.InstanceLifecycle == types.InstanceLifecycleTypeSpot {
				status = spotRequestStatus(ctx, e, inst, requestID)
			}
			return instanceEnd(inst, status, e.cfg)
		}
	}
	return nil
}

// spotRequestStatus is the status code of the spot instance's request, or ""
// when it cannot be read.
func spotRequestStatus(ctx context.Context, e stepEnv, inst types.Instance, requestID *string) string {
	id := aws.ToString(inst.InstanceId)
	if sir := aws.ToString(inst.SpotInstanceRequestId); sir != "" {
		*requestID = sir
	}
	var reqs []types.SpotInstanceRequest
	if *requestID != "" {
		sout, err := e.ec2.DescribeSpotInstanceRequests(ctx, &ec2.DescribeSpotInstanceRequestsInput{SpotInstanceRequestIds: []string{*requestID}})
		if err != nil {
			return ""
		}
		reqs = sout.SpotInstanceRequests
	} else {
		// The instance does not name its request (some EC2 emulators): find
		// it among the requests once.
		sout, err := e.ec2.DescribeSpotInstanceRequests(ctx, &ec2.DescribeSpotInstanceRequestsInput{
			Filters: []types.Filter{{Name: aws.String("instance-id"), Values: []string{id}}},
		})
		if err != nil {
			return ""
		}
		for _, req := range sout.SpotInstanceRequests {
			if aws.ToString(req.InstanceId) == id {
				*requestID = aws.ToString(req.SpotInstanceRequestId)
				reqs = append(reqs, req)
			}
		}
	}
	for _, req := range reqs {
		if req.Status != nil {
			return aws.ToString(req.Status.Code)
		}
	}
	return ""
}

func (s *stepInterruption) Cleanup(state multistep.StateBag) {
	clockOf(state).enter(phaseCleanup)
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

// interruption is why the watcher saw the instance end (*ErrInterrupted or
// *ErrInstanceEnded), or nil.
func interruption(state multistep.StateBag) error {
	w, ok := state.Get(stateWatcher).(*interruptionWatcher)
	if !ok {
		return nil
	}
	return w.Ended()
}

// interruptionAfterFailure is the end of the instance behind a step that
// failed: the watcher's, or what one more look at the instance finds (see
// doc.go). It is nil when the build was cancelled (Ctrl-C) or the instance
// is fine.
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
	return checkInstanceEnd(cctx, e, id, &requestID)
}
