package builder

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
)

// State bag keys shared by the steps. Every step reads what an earlier step
// put with the `, ok` form: Cleanup runs even when Run halted before the value
// was set.
const (
	stateConfig          = "config"
	stateUI              = "ui"
	stateHook            = "hook"
	stateEC2             = "ec2"
	stateBuildID         = "build_id"
	stateInstanceTypes   = "instance_types"     // []string: the types preflight found offered
	stateSourceAMI       = "source_ami"         // string
	stateRootDevice      = "source_root_device" // string: the AMI's RootDeviceName
	statePublicKey       = "ssh_public_key"     // string: authorized_keys line for cloud-config
	stateVpcID           = "vpc_id"             // string
	stateDefaultVPC      = "default_vpc"        // bool: the VPC is the region's default one
	stateSecurityGroupID = "security_group_id"  // string
	stateLaunchTemplate  = "launch_template_id" // string
	stateFleetIDs        = "fleet_ids"          // []string: every fleet CreateFleet returned
	stateInstanceIDs     = "instance_ids"       // []string: every instance a fleet launched
	stateInstanceID      = "instance_id"        // string
	stateInstanceType    = "instance_type"      // string
	stateZone            = "availability_zone"  // string
	stateSpotPrice       = "spot_price"         // string
	stateLifecycle       = "lifecycle"          // string: spot or on-demand
	stateInstance        = "instance"           // types.Instance once running
	stateHost            = "instance_host"      // string: the address SSH connects to
	stateWatcher         = "interruption_watcher"
	stateTimings         = "timings" // map[string]time.Duration
	stateResult          = "payload_result"
	stateGeneratedData   = "generated_data"
)

func getString(state multistep.StateBag, key string) string {
	v, ok := state.GetOk(key)
	if !ok {
		return ""
	}
	s, _ := v.(string)
	return s
}

func getStrings(state multistep.StateBag, key string) []string {
	v, ok := state.GetOk(key)
	if !ok {
		return nil
	}
	s, _ := v.([]string)
	return s
}

func appendString(state multistep.StateBag, key, value string) {
	state.Put(key, append(getStrings(state, key), value))
}

// stepEnv is what nearly every step needs from the state bag.
type stepEnv struct {
	cfg *Config
	ui  packersdk.Ui
	ec2 awscommon.EC2API
}

// env reads the config, the UI and the EC2 client, reporting a missing one
// (a programming error) instead of panicking.
func env(state multistep.StateBag) (stepEnv, error) {
	var e stepEnv
	var ok bool
	if e.cfg, ok = state.Get(stateConfig).(*Config); !ok {
		return e, errors.New("internal error: no configuration in the build state")
	}
	if e.ui, ok = state.Get(stateUI).(packersdk.Ui); !ok {
		return e, errors.New("internal error: no UI in the build state")
	}
	if e.ec2, ok = state.Get(stateEC2).(awscommon.EC2API); !ok {
		return e, errors.New("internal error: no EC2 client in the build state")
	}
	return e, nil
}

// halt records err for Packer, shows it, and halts the build.
func halt(state multistep.StateBag, err error) multistep.StepAction {
	state.Put("error", err)
	if ui, ok := state.Get(stateUI).(packersdk.Ui); ok {
		ui.Error(err.Error())
	}
	return multistep.ActionHalt
}

// recordTiming adds a phase duration to the build's timings.
func recordTiming(state multistep.StateBag, name string, d time.Duration) {
	t, _ := state.Get(stateTimings).(map[string]time.Duration)
	if t == nil {
		t = map[string]time.Duration{}
	}
	t[name] = d
	state.Put(stateTimings, t)
}

// apiErrorCode is the EC2 error code of err ("" when err is not an API error).
func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// resourceName is the Name tag of every resource the build creates.
func resourceName(cfg *Config) string {
	name := cfg.PackerBuildName
	if name == "" {
		name = "nixos-sd"
	}
	return "packer-nixos-sd-" + name
}

// resourceTags are cfg.Tags plus the build id and the Name tag (unless the
// user set a Name), plus extra (run_tags for the instance and its volume).
func resourceTags(cfg *Config, buildID string, extra map[string]string) []types.Tag {
	m := map[string]string{"Name": resourceName(cfg)}
	for k, v := range cfg.Tags {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	m[BuildIDTag] = buildID
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tags := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return tags
}

func tagSpec(rt types.ResourceType, tags []types.Tag) types.TagSpecification {
	return types.TagSpecification{ResourceType: rt, Tags: tags}
}

// cleanupContext is the context cleanups run with: a fresh one, since the
// build's context is already cancelled after Ctrl-C, bounded so a dead API
// cannot hang Packer forever.
func cleanupContext(cfg *Config) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*cfg.StateTimeoutDuration()+time.Minute)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// backoff yields poll delays starting fast (250 ms, or the poll interval when
// that is shorter) and doubling up to the poll interval.
type backoff struct {
	next, max time.Duration
}

func newBackoff(max time.Duration) *backoff {
	first := 250 * time.Millisecond
	if max < first {
		first = max
	}
	return &backoff{next: first, max: max}
}

func (b *backoff) Next() time.Duration {
	d := b.next
	b.next *= 2
	if b.next > b.max {
		b.next = b.max
	}
	return d
}

// cleanupError reports a resource the build could not remove, with what to do.
func cleanupError(ui packersdk.Ui, what, id string, err error) {
	if ui == nil {
		return
	}
	ui.Error(fmt.Sprintf("Could not delete %s %s: %v. Delete it by hand (EC2 console, or the AWS CLI), and look for other resources tagged %s.", what, id, err, BuildIDTag))
}

func joinQuoted(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
