package builder

import "github.com/hashicorp/packer-plugin-sdk/multistep"

// State bag keys shared by the steps. Every step reads what an earlier step
// put with the `, ok` form: Cleanup runs even when Run halted before the value
// was set.
const (
	stateConfig           = "config"
	stateUI               = "ui"
	stateHook             = "hook"
	stateEC2              = "ec2"
	stateCallerAccount    = "caller_account" // func(context.Context) (string, error): STS in the partition's home region
	stateBuildID          = "build_id"
	stateExpires          = "expires"            // string: the ExpiresTag value of this build's resources
	stateInstanceTypes    = "instance_types"     // []string: the types preflight found offered
	stateSourceAMI        = "source_ami"         // string
	stateRootDevice       = "source_root_device" // string: the AMI's RootDeviceName
	statePublicKey        = "ssh_public_key"     // string: authorized_keys line for cloud-config
	stateHostKey          = "ssh_host_key"       // *hostkey.Pair: the instance's host key, pinned
	stateKnownHostsPath   = "known_hosts_path"   // string: the -debug known_hosts file
	stateVpcID            = "vpc_id"             // string
	statePools            = "pools"              // []pool: the (type × subnet) pairs to launch in
	stateSecurityGroupID  = "security_group_id"  // string
	stateSSHCIDRs         = "ssh_cidrs"          // []string: whom the group admits
	stateLaunchTemplate   = "launch_template_id" // string
	stateFleetIDs         = "fleet_ids"          // []string: every fleet CreateFleet returned
	stateInstanceIDs      = "instance_ids"       // []string: every instance a fleet launched
	stateFleetRequested   = "fleet_requested"    // bool: a CreateFleet was sent; Cleanup searches by tag
	stateFleetPending     = "fleet_pending"      // bool: the last CreateFleet's answer never arrived
	stateLaunchRound      = "launch_round"       // int: 1, plus one per spot interruption retried
	stateVCPUs            = "instance_vcpus"     // map[string]int32: vCPUs per instance type
	stateInstanceID       = "instance_id"        // string
	stateInstanceType     = "instance_type"      // string
	stateZone             = "availability_zone"  // string
	stateSpotPrice        = "spot_price"         // string
	stateLifecycle        = "lifecycle"          // string: spot or on-demand
	stateHost             = "instance_host"      // string: the address SSH connects to
	stateWatcher          = "interruption_watcher"
	stateInterrupted      = "interrupted"          // *ErrInterrupted: what ended the current attempt
	stateTimings          = "timings"              // map[string]time.Duration
	statePhases           = "phases"               // *phaseClock
	stateLaunchedAt       = "instance_launched_at" // time.Time
	stateInterruptedCosts = "interrupted_costs"    // []costReport: instances EC2 interrupted
	stateResult           = "payload_result"
)

func getString(state multistep.StateBag, key string) string {
	s, _ := state.Get(key).(string)
	return s
}

func getStrings(state multistep.StateBag, key string) []string {
	s, _ := state.Get(key).([]string)
	return s
}

func appendString(state multistep.StateBag, key, value string) {
	state.Put(key, append(getStrings(state, key), value))
}
