// Package builder is the nixos-sd builder: it rents a native AArch64 EC2 spot
// instance, builds a NixOS SD image there, brings the verified image home and
// leaves nothing running.
//
// # Pipeline
//
// Builder.steps lists the steps in order, one per file (step_*.go, each with
// its test beside it). A step that creates an AWS resource also removes it in
// its Cleanup; Packer runs the cleanups in reverse order on success, failure
// and Ctrl-C, so the instance is terminated, and waited for, before the
// launch template and the security group it uses are deleted. Every
// resource carries the tag nixos-sd:build-id (BuildIDTag) and the Name
// packer-nixos-sd-<build name>. Cleanups run with cleanupContext, a fresh
// context: the build's own is already cancelled after Ctrl-C.
//
// Steps pass values through the state bag under the keys of state_keys.go,
// always read with the ", ok" form or getString/getStrings: a Cleanup runs
// even when Run halted before the value was set. env and halt never panic.
//
// # Launching
//
// stepNetwork turns the options into (instance type × subnet) pools, leaving
// out pairs whose zone does not offer the type, so a multi-type request never
// fails with "not supported in AZ". stepFleet sends one EC2 Fleet request of
// type instant covering every pool: EC2 picks the pool with capacity. The
// answer's per-pool Errors are told apart (fleet_errors.go): a pool EC2 does
// not support is left out and the others asked again at once; capacity is
// retried launchAttempts times, waiting capacityWait (15 × poll_interval)
// doubling, then, with on_demand_fallback, as on-demand; a quota
// (MaxSpotInstanceCountExceeded, VcpuLimitExceeded) is not retried: the
// error names the Service Quotas quota to raise and where; anything else
// fails at once, unless another pool reported capacity, which one odd pool
// must not hide.
//
// # Nothing untracked
//
// Each request has its own client token (build id, launch round, attempt),
// so an SDK retry of one request launches nothing twice on EC2. A request
// whose answer never arrived (Ctrl-C, a dropped connection) may still have
// launched an instance: stepFleet's Cleanup searches the live instances and
// fleets carrying the build id tag (untracked.go) and removes them too.
// Calls naming a resource created a moment ago retry its NotFound through
// the SDK's retryer (awscommon.NotYetVisible): EC2 is eventually consistent,
// and NotFound then means "not visible yet", never "gone".
//
// # Spot interruptions retried
//
// stepAttempts runs the launch sub-pipeline (fleet to provisioners) as one
// attempt with the plugin SDK's retry, under the runner the SDK gives the
// outer pipeline: -debug pauses after each sub-step, -on-error applies to
// them, and commonsteps.StepProvision is one of them, unwrapped, so
// -on-error=run-cleanup-provisioner finds it. Steps are never wrapped: each
// enters its phase itself (phases.go). An interruption is kept apart from
// the build's error (stateInterrupted), and the attempt's state
// (attemptState) hides the runner's halt mark while it lasts: the SDK's
// -on-error wrappers then run the attempt's cleanups (terminate, delete the
// fleet) in every mode, and the attempt starts again with fresh steps, up
// to spot_retries times. Other failures are not retried; -on-error decides
// their cleanup, so -on-error=abort keeps them.
//
// # Leftovers
//
// Every resource carries nixos-sd:expires, the build's start plus
// instance_max_lifetime: by then the instance has shut itself down and the
// build is over. stepLeftovers lists resources of other builds past that
// time, with the AWS CLI command removing each, and removes them with
// cleanup_leftovers. After a failed build with -on-error=abort,
// Builder.reportKept lists what was kept, with the same commands.
//
// # Waiting
//
// Waits use the SDK's waiters (InstanceRunning, InstanceTerminated) with
// their rule replaced: the SDK's rules fail at once on states that still end
// where the build wants (a pending instance being terminated), or give up on
// an instance id not visible yet after launch. Delays start at 250 ms and
// double up to poll_interval; each wait lasts at most state_timeout. Deleting
// the security group retries DependencyViolation with the plugin SDK's retry
// package while a terminating instance still holds the group.
//
// # Interruptions
//
// stepInterruption starts a watcher that polls the instance and its spot
// request every 3 × poll_interval and cancels the later steps' context when
// the instance ends, so the build stops at once instead of waiting on a dead
// SSH connection. Why it ended decides what follows (instance_end.go): a
// spot instance EC2 took back (StateReason Server.SpotInstanceTermination or
// Server.SpotInstanceShutdown, or an interruption status of its spot
// request) is an *ErrInterrupted, retried within spot_retries; any other
// reason (a KMS key EBS cannot use, a volume limit, the instance powering
// itself off, someone terminating it) is an *ErrInstanceEnded that ends the
// build with what to do. An on-demand instance is never interrupted. A dropped SSH connection
// is often the first sign of a reclaimed instance, seconds before the
// watcher's next poll: a failed build step therefore looks at the instance
// once more (interruptionAfterFailure) before blaming SSH.
//
// # What keeps an orphan short-lived
//
// The SSH key is made in memory and reaches the instance through the user
// data's cloud-config ssh_authorized_keys, not through an imported EC2 key
// pair: one fewer resource to create, tag, and leak when Packer is killed. The
// same user data schedules a power-off at instance_max_lifetime, and the
// launch template's InstanceInitiatedShutdownBehavior is terminate. Once SSH
// is up, stepWatchdog starts a root process on the instance that powers it
// off when Packer's heartbeat (a file Packer touches every orphan_timeout/5)
// is older than orphan_timeout: a killed Packer or a lost connection costs
// minutes, not hours.
//
// # Whose host we talk to
//
// stepHostKey makes an ed25519 host key pair per build; the user data hands
// it to cloud-init (ssh_keys, with ssh_deletekeys so the AMI's own keys go
// and no other key is generated), and stepConnect accepts that key only
// (internal/hostkey). A host presenting another key ends the wait for SSH at
// once with the fingerprints: a wrong key never heals, and retrying it would
// only hide the reason behind "timeout waiting for SSH". So the image's
// checksum is computed by the instance the build launched, not by whatever
// answered at its address. The private half is in the user data, readable
// through the instance's metadata service and by principals allowed
// ec2:DescribeInstanceAttribute, and lives only as long as the instance. The
// bastion's host key is not checked: the bastion is the user's machine.
package builder
