package builder

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// State reason codes EC2 gives an instance that stopped or terminated (EC2
// API reference, StateReason).
const (
	reasonSpotTermination  = "Server.SpotInstanceTermination"
	reasonSpotShutdown     = "Server.SpotInstanceShutdown"
	reasonClientInternal   = "Client.InternalError"
	reasonVolumeLimit      = "Client.VolumeLimitExceeded"
	reasonNoCapacity       = "Server.InsufficientInstanceCapacity"
	reasonInstanceShutdown = "Client.InstanceInitiatedShutdown"
	reasonUserShutdown     = "Client.UserInitiatedShutdown"
	reasonServerInternal   = "Server.InternalError"
	reasonScheduledStop    = "Server.ScheduledStop"
	reasonSnapshotNotFound = "Client.InvalidSnapshot.NotFound"
)

// spotInterruptionReasons are the state reasons of a spot instance EC2 took
// back.
var spotInterruptionReasons = []string{reasonSpotTermination, reasonSpotShutdown}

// interruptedCodes are spot request status codes meaning EC2 takes the
// instance away.
var interruptedCodes = []string{
	"instance-terminated-by-price", "marked-for-termination", "instance-terminated-no-capacity",
	"instance-terminated-capacity-oversubscribed", "instance-terminated-launch-group-constraint",
	"marked-for-stop", "instance-stopped-by-price", "instance-stopped-no-capacity",
	"instance-stopped-capacity-oversubscribed",
}

// ErrInstanceEnded is the instance stopping or terminating under the build
// for a reason other than a spot interruption. It ends the build: starting
// again on a new instance would end the same way.
type ErrInstanceEnded struct {
	InstanceID string
	State      string // shutting-down, terminated, stopping, stopped
	Code       string // StateReason.Code; "" when EC2 gave none
	Message    string // StateReason.Message
	// Lifecycle is "spot" or "on-demand".
	Lifecycle string
	// Advice says what the code means and what to do.
	Advice string
}

func (e *ErrInstanceEnded) Error() string {
	why := cmp.Or(e.Message, e.Code, "EC2 gave no reason")
	if e.Code != "" && !strings.Contains(why, e.Code) {
		why = e.Code + ": " + why
	}
	return fmt.Sprintf("%s instance %s is %s (%s); %s", cmp.Or(e.Lifecycle, "the"), e.InstanceID, e.State, why, e.Advice)
}

// goneState says whether the instance is gone or going (shutting down,
// terminated, stopping or stopped).
func goneState(inst types.Instance) bool {
	if inst.State == nil {
		return false
	}
	switch inst.State.Name {
	case types.InstanceStateNameShuttingDown, types.InstanceStateNameTerminated,
		types.InstanceStateNameStopping, types.InstanceStateNameStopped:
		return true
	}
	return false
}

// instanceEnd says why the instance is gone or going: an *ErrInterrupted
// when EC2 took a spot instance back (StateReason Server.SpotInstance*, or
// spotStatus, its spot request's status, naming an interruption), else an
// *ErrInstanceEnded with what to do. It is nil while the instance is pending
// or running. An on-demand instance is never interrupted.
func instanceEnd(inst types.Instance, spotStatus string, cfg *Config) error {
	id := aws.ToString(inst.InstanceId)
	spot := inst.InstanceLifecycle == types.InstanceLifecycleTypeSpot
	var code, msg string
	if inst.StateReason != nil {
		code, msg = aws.ToString(inst.StateReason.Code), aws.ToString(inst.StateReason.Message)
	}
	interrupted := spot && (slices.Contains(spotInterruptionReasons, code) || slices.Contains(interruptedCodes, spotStatus))
	if !goneState(inst) {
		if interrupted && spotStatus != "" {
			return &ErrInterrupted{Reason: "spot request " + spotStatus, InstanceID: id}
		}
		return nil
	}
	state := string(inst.State.Name)
	if interrupted || (spot && code == "") {
		// A spot instance ending without a reason yet is EC2's doing: a user
		// or the instance itself leaves a reason at once.
		reason := "instance " + state
		if m := cmp.Or(msg, code, prefixed("spot request ", spotStatus)); m != "" {
			reason += ": " + m
		}
		return &ErrInterrupted{Reason: reason, InstanceID: id}
	}
	lifecycle := "on-demand"
	if spot {
		lifecycle = "spot"
	}
	return &ErrInstanceEnded{InstanceID: id, State: state, Code: code, Message: msg, Lifecycle: lifecycle, Advice: endAdvice(code, state, cfg)}
}

func prefixed(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

// endAdvice is what the state reason means for the build and what to do.
func endAdvice(code, state string, cfg *Config) string {
	region := cfg.Region
	switch code {
	case reasonClientInternal:
		key := "the account's default EBS key (aws ec2 get-ebs-default-kms-key-id --region " + region + ")"
		if cfg.VolumeKMSKeyID != "" {
			key = fmt.Sprintf("volume_kms_key_id %q", cfg.VolumeKMSKeyID)
		}
		return fmt.Sprintf("EC2 ended it at launch: most likely its encrypted EBS volume's KMS key is one the caller may not use. "+
			"The key is %s; check it is enabled (aws kms describe-key --region %s --key-id <key>) and that its key policy or the credentials allow "+
			"kms:CreateGrant, kms:Decrypt, kms:GenerateDataKeyWithoutPlaintext, kms:ReEncrypt* and kms:DescribeKey "+
			"(statement NixosSdEbsKms in docs/iam-policy.json), or set volume_kms_key_id to a key they may use", key, region)
	case reasonVolumeLimit:
		return fmt.Sprintf("the account reached its EBS volume or storage limit in %s; delete unused volumes (aws ec2 describe-volumes --region %s --filters Name=status,Values=available), "+
			"lower volume_size (%d GiB), or raise the EBS quota \"Storage for General Purpose SSD (gp3) volumes, in TiB\" in Service Quotas", region, region, cfg.VolumeSize)
	case reasonNoCapacity:
		return "EC2 ran out of capacity for it while it launched; run the build again, add instance_types, or try another availability_zone"
	case reasonInstanceShutdown:
		return fmt.Sprintf("the instance powered itself off: its lifetime cap instance_max_lifetime (%s) was reached, its watchdog did not hear from Packer for orphan_timeout (%s), "+
			"or something the build ran on it shut it down; raise instance_max_lifetime or orphan_timeout if the build needs longer, and check the build's commands and provisioners", cfg.InstanceMaxLifetimeDuration(), cfg.OrphanTimeoutDuration())
	case reasonUserShutdown:
		verb := "terminated"
		if strings.HasPrefix(state, "stop") {
			verb = "stopped"
		}
		return fmt.Sprintf("someone or something (a person, a script, an automation such as an instance scheduler) %s it through the EC2 API while the build ran; "+
			"find who in CloudTrail (event TerminateInstances or StopInstances), keep them away from instances tagged %s, and run the build again", verb, BuildIDTag)
	case reasonServerInternal, reasonScheduledStop:
		return "EC2 ended it on its side; run the build again (see https://health.aws.amazon.com for outages)"
	case reasonSnapshotNotFound:
		return "the source AMI's snapshot is gone; choose another source_ami, or remove it to use the newest Debian AMI"
	}
	return "run the build again; if it keeps happening, look the reason up in the EC2 documentation (StateReason)"
}
