//go:generate go tool packer-sdc struct-markdown
//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config

package builder

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/common"
	"github.com/hashicorp/packer-plugin-sdk/communicator"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/debianami"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
)

// DefaultInstanceTypes are current Graviton types with at least 8 vCPUs and
// 16 GiB of memory, spread over three generations and two families so that
// at least one spot pool has capacity in nearly every zone.
var DefaultInstanceTypes = []string{"c7g.2xlarge", "m7g.2xlarge", "c6g.2xlarge", "m6g.2xlarge", "c8g.2xlarge", "m8g.2xlarge"}

// Config is the nixos-sd builder's configuration.
type Config struct {
	common.PackerConfig    `mapstructure:",squash"`
	awscommon.AccessConfig `mapstructure:",squash"`
	payload.Config         `mapstructure:",squash"`
	Comm                   communicator.Config `mapstructure:",squash"`

	// The AMI to boot. Defaults to the newest official Debian AMI of
	// `debian_release` for arm64, looked up as the `nixos-sd-debian-ami` data
	// source does. Required in the China and GovCloud regions, where the
	// plugin knows no Debian account.
	SourceAMI string `mapstructure:"source_ami" required:"false"`
	// The Debian release whose newest official AMI is used when `source_ami`
	// is not set: a codename or number such as `trixie` or `13`. Defaults to
	// the newest stable release the plugin knows (`trixie`).
	DebianRelease string `mapstructure:"debian_release" required:"false"`
	// The spot instance types to choose from, cheapest pool with capacity
	// first. All must be arm64. Defaults to
	// `["c7g.2xlarge", "m7g.2xlarge", "c6g.2xlarge", "m6g.2xlarge", "c8g.2xlarge", "m8g.2xlarge"]`:
	// 8 vCPUs and 16 or 32 GiB, enough to build an SD image in minutes.
	InstanceTypes []string `mapstructure:"instance_types" required:"false"`
	// The availability zone to launch in, for example `us-east-2a`. Empty
	// (the default) lets EC2 pick among every zone of the region that offers
	// the instance types, which finds spot capacity far more often.
	AvailabilityZone string `mapstructure:"availability_zone" required:"false"`
	// The subnet to launch in. Defaults to the default subnets of the default
	// VPC (of `availability_zone` when given).
	SubnetID string `mapstructure:"subnet_id" required:"false"`
	// The VPC whose subnets to use when `subnet_id` is not given. Defaults to
	// the region's default VPC.
	VpcID string `mapstructure:"vpc_id" required:"false"`
	// The most to pay per instance hour: `auto` (the default) caps it at the
	// on-demand price, or a number of US dollars such as `0.12`. Preflight
	// refuses a number below the current price of every spot pool of
	// `instance_types` (unless `on_demand_fallback`).
	SpotPrice string `mapstructure:"spot_price" required:"false"`
	// How EC2 Fleet picks among spot pools: `price-capacity-optimized` (the
	// default, cheap and rarely interrupted), `capacity-optimized`,
	// `lowest-price` or `diversified`.
	SpotAllocationStrategy string `mapstructure:"spot_allocation_strategy" required:"false"`
	// Launch an on-demand instance when no spot pool has capacity. Defaults
	// to false: the build fails and says so instead of costing more.
	OnDemandFallback bool `mapstructure:"on_demand_fallback" required:"false"`
	// The size of the root volume in GiB (gp3, encrypted, deleted with the
	// instance). Defaults to 30, room for the Nix store of an SD image build.
	VolumeSize int32 `mapstructure:"volume_size" required:"false"`
	// The KMS key that encrypts the root volume: a key id, `alias/name`, or
	// a key or alias ARN of the build's region. Empty (the default) uses the
	// account's default EBS key (`aws/ebs`, or the customer-managed key set
	// with `aws ec2 modify-ebs-default-kms-key-id`). A customer-managed key
	// must let the credentials use it for EBS: see the `NixosSdEbsKms`
	// statement of `docs/iam-policy.json`.
	VolumeKMSKeyID string `mapstructure:"volume_kms_key_id" required:"false"`
	// Tags for every resource the build creates. The plugin adds `Name`
	// (unless set here), `nixos-sd:build-id` and `nixos-sd:expires`. EC2's
	// limits apply with those counted: at most 50 tags on the instance (tags
	// and run_tags together), keys of 1 to 128 characters not beginning with
	// `aws:`, values of at most 256.
	Tags map[string]string `mapstructure:"tags" required:"false"`
	// Extra tags for the instance and its volume only, under the same limits
	// as `tags`.
	RunTags map[string]string `mapstructure:"run_tags" required:"false"`
	// The CIDR blocks allowed to reach the instance's SSH port. Defaults to
	// this machine's public address as a /32, found through `public_ip_url`;
	// with `ssh_interface` `private_ip` or `private_dns`, to the VPC's CIDR
	// blocks, since AWS then sees the caller's address inside the VPC (or a
	// bastion's).
	SSHSourceCIDRs []string `mapstructure:"ssh_source_cidrs" required:"false"`
	// The URL that answers this machine's public IPv4 address as plain text,
	// asked directly, never through `HTTP_PROXY`/`HTTPS_PROXY` (a proxy's
	// address is not the one AWS sees). Defaults to `https://checkip.amazonaws.com`.
	PublicIPURL string `mapstructure:"public_ip_url" required:"false"`
	// Which address of the instance to connect to: `public_ip` (the default),
	// `private_ip`, `public_dns` or `private_dns`. `ssh_host`, when set, wins.
	SSHInterface string `mapstructure:"ssh_interface" required:"false"`
	// The longest the instance may live. It shuts itself down (and so
	// terminates) after this, even if Packer was killed and could not clean
	// up. Defaults to `3h`, or `build_timeout` plus 15m when that is longer;
	// at least `build_timeout` plus 15m.
	InstanceMaxLifetime string `mapstructure:"instance_max_lifetime" required:"false"`
	// How long the instance keeps running after it last heard from Packer.
	// While the build runs, Packer touches a heartbeat file on the instance;
	// a watchdog there shuts the instance down (and so terminates it) when the
	// heartbeat is older than this, so a killed Packer or a lost connection
	// costs minutes, not hours. Defaults to `15m`; at least `1m`.
	OrphanTimeout string `mapstructure:"orphan_timeout" required:"false"`
	// How many times the build starts again on a new instance when EC2
	// interrupts the spot instance (each attempt cleans up after itself).
	// Defaults to 1; 0 fails the build at the first interruption.
	SpotRetries *int `mapstructure:"spot_retries" required:"false"`
	// Remove resources of earlier nixos-sd builds in the region whose expiry
	// tag (`nixos-sd:expires`) has passed: instances, fleets, launch
	// templates and security groups a killed Packer left. Defaults to false:
	// preflight lists them with the commands to remove them.
	CleanupLeftovers bool `mapstructure:"cleanup_leftovers" required:"false"`
	// How often to poll EC2 while waiting for a state change. Defaults to `2s`.
	PollInterval string `mapstructure:"poll_interval" required:"false"`
	// How long to wait for one state change (an instance to run or terminate,
	// a security group to be free) before giving up. Defaults to `10m`.
	StateTimeout string `mapstructure:"state_timeout" required:"false"`

	ctx         interpolate.Context
	spotRetries int
	// sshHost is ssh_host as the user set it: Packer's SSH step writes each
	// address it connects to into Comm.SSHHost.
	sshHost             string
	release             debianami.Release
	instanceMaxLifetime time.Duration
	orphanTimeout       time.Duration
	pollInterval        time.Duration
	stateTimeout        time.Duration
}

var (
	amiPattern      = regexp.MustCompile(`^ami-[0-9a-f]{8,17}$`)
	zonePattern     = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+[a-z]$`)
	typePattern     = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9]+$`)
	subnetPattern   = regexp.MustCompile(`^subnet-[0-9a-f]{8,17}$`)
	vpcPattern      = regexp.MustCompile(`^vpc-[0-9a-f]{8,17}$`)
	pricePattern    = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)
	allocStrategies = []string{"price-capacity-optimized", "capacity-optimized", "lowest-price", "diversified"}
	sshInterfaces   = []string{"public_ip", "private_ip", "public_dns", "private_dns"}
)

// unknownValue is what Packer passes for a value not known yet, such as a data
// source's output during `packer validate`.
const unknownValue = "<unknown>"

// BuildIDTag is the tag key carrying the build's id on every resource.
const BuildIDTag = "nixos-sd:build-id"

// ExpiresTag is the tag key carrying, on every resource, the time (RFC 3339,
// UTC) after which it is surely unused: a later build may remove it
// (cleanup_leftovers).
const ExpiresTag = "nixos-sd:expires"

// Prepare decodes and validates the configuration. It makes no AWS call.
func (c *Config) Prepare(raws ...interface{}) ([]string, error) {
	err := config.Decode(c, &config.DecodeOpts{
		PluginType:         BuilderID,
		Interpolate:        true,
		InterpolateContext: &c.ctx,
		InterpolateFilter: &interpolate.RenderFilter{
			Exclude: []string{},
		},
	}, raws...)
	if err != nil {
		return nil, err
	}

	var errs *packersdk.MultiError
	var warnings []string
	add := func(es ...error) { errs = packersdk.MultiErrorAppend(errs, es...) }

	add(c.AccessConfig.Prepare()...)
	add(c.Config.Prepare(c.PackerBuildName, c.PackerForce)...)
	warnings = append(warnings, c.Config.Warnings()...)

	c.prepareCommunicator(add)
	c.prepareSource(add)
	c.prepareReleaseNix(add, &warnings)
	c.preparePlacement(add)
	c.prepareLaunch(add)
	c.prepareSSHAccess(add, &warnings)
	c.prepareDurations(add)

	if errs != nil && len(errs.Errors) > 0 {
		return warnings, errs
	}
	return warnings, nil
}

// prepareCommunicator defaults and checks the SSH communicator.
func (c *Config) prepareCommunicator(add func(...error)) {
	if c.Comm.SSHUsername == "" {
		c.Comm.SSHUsername = "admin"
	}
	if c.Comm.Type == "" {
		c.Comm.Type = "ssh"
	}
	if c.Comm.Type != "ssh" {
		add(fmt.Errorf("communicator: %q is not supported; the build needs SSH (remove the communicator option)", c.Comm.Type))
	}
	if c.Comm.SSHTimeout == 0 {
		c.Comm.SSHTimeout = 5 * time.Minute
	}
	add(c.Comm.Prepare(&c.ctx)...)
	c.sshHost = c.Comm.SSHHost
}

// prepareSource checks source_ami and debian_release.
func (c *Config) prepareSource(add func(...error)) {
	// `packer validate` does not evaluate data sources: their values arrive as "<unknown>".
	if c.SourceAMI != "" && c.SourceAMI != unknownValue && !amiPattern.MatchString(c.SourceAMI) {
		add(fmt.Errorf("source_ami: %q is not an AMI id; use an id such as \"ami-0123456789abcdef0\", or remove it to use the newest Debian AMI", c.SourceAMI))
	}
	if c.SourceAMI != "" && c.DebianRelease != "" {
		add(errors.New("source_ami and debian_release: set one or the other; debian_release only chooses the default AMI"))
	}
	if r, err := debianami.ParseRelease(c.DebianRelease); err != nil {
		add(fmt.Errorf("debian_release: %w", err))
	} else {
		c.release = r
	}
	if part := awscommon.Partition(c.Region); c.SourceAMI == "" && c.Region != "" {
		if _, ok := debianami.OwnerIn(part); !ok {
			add(debianami.NoOwnerError("source_ami", c.Region, part))
		}
	}
}

// preparePlacement checks instance_types, availability_zone, subnet_id and
// vpc_id.
func (c *Config) preparePlacement(add func(...error)) {
	if len(c.InstanceTypes) == 0 {
		c.InstanceTypes = append([]string(nil), DefaultInstanceTypes...)
	}
	seen := map[string]bool{}
	for _, t := range c.InstanceTypes {
		if !typePattern.MatchString(t) {
			add(fmt.Errorf("instance_types: %q is not an instance type name; use names such as \"c7g.2xlarge\"", t))
		} else if looksX86(t) {
			add(fmt.Errorf("instance_types: %q is not an AArch64 (Graviton) type; the build needs arm64, so use a type such as %q", t, graviton(t)))
		}
		if seen[t] {
			add(fmt.Errorf("instance_types: %q is listed twice; remove one", t))
		}
		seen[t] = true
	}

	if c.AvailabilityZone != "" {
		if !zonePattern.MatchString(c.AvailabilityZone) {
			add(fmt.Errorf("availability_zone: %q is not a zone name; use a name such as \"us-east-2a\", or leave it empty to let EC2 choose", c.AvailabilityZone))
		} else if c.Region != "" && !strings.HasPrefix(c.AvailabilityZone, c.Region) {
			add(fmt.Errorf("availability_zone: %q is not in region %q; use a zone of that region (such as %q) or leave it empty", c.AvailabilityZone, c.Region, c.Region+"a"))
		}
	}
	if c.SubnetID != "" && !subnetPattern.MatchString(c.SubnetID) {
		add(fmt.Errorf("subnet_id: %q is not a subnet id; use an id such as \"subnet-0123456789abcdef0\", or remove it to use the default VPC's subnets", c.SubnetID))
	}
	if c.VpcID != "" && c.SubnetID != "" {
		add(fmt.Errorf("vpc_id: %q is set with subnet_id, whose own VPC the build uses; remove vpc_id (or subnet_id, to use the VPC's default subnets)", c.VpcID))
	}
	if c.VpcID != "" && !vpcPattern.MatchString(c.VpcID) {
		add(fmt.Errorf("vpc_id: %q is not a VPC id; use an id such as \"vpc-0123456789abcdef0\", or remove it to use the default VPC", c.VpcID))
	}
}

// prepareLaunch checks the spot price, the allocation strategy, the volume and the
// tags.
func (c *Config) prepareLaunch(add func(...error)) {
	if c.SpotPrice == "" {
		c.SpotPrice = "auto"
	}
	if c.SpotPrice != "auto" {
		// A plain decimal only: ParseFloat alone also takes "NaN", "Inf",
		// exponents and hex floats, which EC2 would refuse mid-build.
		if p, err := strconv.ParseFloat(c.SpotPrice, 64); err != nil || !pricePattern.MatchString(c.SpotPrice) || p <= 0 {
			add(fmt.Errorf("spot_price: %q is neither \"auto\" nor a positive price; use \"auto\" or US dollars per hour such as \"0.12\"", c.SpotPrice))
		}
	}
	if c.SpotAllocationStrategy == "" {
		c.SpotAllocationStrategy = "price-capacity-optimized"
	} else if !slices.Contains(allocStrategies, c.SpotAllocationStrategy) {
		add(fmt.Errorf("spot_allocation_strategy: %q is not one of %s; use one of those, or remove it for price-capacity-optimized", c.SpotAllocationStrategy, strings.Join(allocStrategies, ", ")))
	}

	if c.VolumeSize == 0 {
		c.VolumeSize = 30
	} else if c.VolumeSize < 8 || c.VolumeSize > 16384 {
		add(fmt.Errorf("volume_size: %d GiB is out of range; use 8 to 16384 (30 is plenty for an SD image)", c.VolumeSize))
	}
	if c.VolumeKMSKeyID != "" {
		if err := awscommon.CheckKMSKeyID(c.VolumeKMSKeyID, c.Region); err != nil {
			add(fmt.Errorf("volume_kms_key_id: %w", err))
		}
	}
	add(checkTags(c.Tags, c.RunTags)...)
}

// prepareSSHAccess checks who may reach SSH and on which address.
func (c *Config) prepareSSHAccess(add func(...error), warnings *[]string) {
	for _, cidr := range c.SSHSourceCIDRs {
		if _, ipnet, err := net.ParseCIDR(cidr); err != nil {
			add(fmt.Errorf("ssh_source_cidrs: %q is not a CIDR block; use a form such as \"203.0.113.7/32\"", cidr))
		} else if ones, _ := ipnet.Mask.Size(); ones == 0 {
			*warnings = append(*warnings, fmt.Sprintf("ssh_source_cidrs: %s opens SSH to the whole internet; prefer your own address as a /32", cidr))
		}
	}
	if c.PublicIPURL != "" && len(c.SSHSourceCIDRs) > 0 {
		*warnings = append(*warnings, fmt.Sprintf("public_ip_url: %s is not asked, since ssh_source_cidrs gives who may reach SSH; remove one of them", c.PublicIPURL))
	}
	if c.PublicIPURL == "" {
		c.PublicIPURL = "https://checkip.amazonaws.com"
	} else if u, err := url.Parse(c.PublicIPURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add(fmt.Errorf("public_ip_url: %q is not an http(s) URL; use a URL such as \"https://checkip.amazonaws.com\", or set ssh_source_cidrs instead", c.PublicIPURL))
	}
	if c.SSHInterface == "" {
		c.SSHInterface = "public_ip"
	} else if !slices.Contains(sshInterfaces, c.SSHInterface) {
		add(fmt.Errorf("ssh_interface: %q is not one of %s; use one of those, or remove it for public_ip", c.SSHInterface, strings.Join(sshInterfaces, ", ")))
	}
}

// prepareDurations checks instance_max_lifetime, orphan_timeout,
// poll_interval and state_timeout.
func (c *Config) prepareDurations(add func(...error)) {
	// Unset, the lifetime is 3h or, for a longer build_timeout, just enough
	// for it: a default must not fail validation.
	c.instanceMaxLifetime = max(3*time.Hour, c.BuildTimeoutDuration()+15*time.Minute)
	if c.InstanceMaxLifetime != "" {
		d, err := time.ParseDuration(c.InstanceMaxLifetime)
		if err != nil || d <= 0 {
			add(fmt.Errorf("instance_max_lifetime: %q is not a positive duration; use a value such as \"3h\"", c.InstanceMaxLifetime))
		} else {
			c.instanceMaxLifetime = d
		}
	}
	if min := c.BuildTimeoutDuration() + 15*time.Minute; c.instanceMaxLifetime < min {
		add(fmt.Errorf("instance_max_lifetime: %s is shorter than build_timeout plus 15m (%s); raise it or lower build_timeout", c.instanceMaxLifetime, min))
	}

	c.orphanTimeout = 15 * time.Minute
	if c.OrphanTimeout != "" {
		d, err := time.ParseDuration(c.OrphanTimeout)
		switch {
		case err != nil || d <= 0:
			add(fmt.Errorf("orphan_timeout: %q is not a positive duration; use a value such as \"15m\"", c.OrphanTimeout))
		case d < time.Minute:
			add(fmt.Errorf("orphan_timeout: %s is too short; a busy link can delay a heartbeat, so use at least 1m", d))
		default:
			c.orphanTimeout = d
		}
	}

	var err error
	c.spotRetries = 1
	if c.SpotRetries != nil {
		if *c.SpotRetries < 0 || *c.SpotRetries > 10 {
			add(fmt.Errorf("spot_retries: %d is out of range; use 0 (no retry) to 10", *c.SpotRetries))
		} else {
			c.spotRetries = *c.SpotRetries
		}
	}
	if c.pollInterval, err = awscommon.ParseDuration("poll_interval", c.PollInterval, 2*time.Second); err != nil {
		add(err)
	}
	if c.stateTimeout, err = awscommon.ParseDuration("state_timeout", c.StateTimeout, 10*time.Minute); err != nil {
		add(err)
	}
}

// UserSSHHost is ssh_host as configured ("" when the build picks the
// instance's address). Comm.SSHHost is not: Packer's SSH step overwrites it
// with the address it connected to, which a retry on a new instance must not
// reuse.
func (c *Config) UserSSHHost() string { return c.sshHost }

// SpotRetriesCount is the prepared spot_retries.
func (c *Config) SpotRetriesCount() int { return c.spotRetries }

// Release is the prepared debian_release.
func (c *Config) Release() debianami.Release { return c.release }

// OrphanTimeoutDuration is the prepared orphan_timeout.
func (c *Config) OrphanTimeoutDuration() time.Duration { return c.orphanTimeout }

// PollIntervalDuration is the prepared poll_interval.
func (c *Config) PollIntervalDuration() time.Duration {
	if c.pollInterval <= 0 {
		return 2 * time.Second
	}
	return c.pollInterval
}

// StateTimeoutDuration is the prepared state_timeout.
func (c *Config) StateTimeoutDuration() time.Duration {
	if c.stateTimeout <= 0 {
		return 10 * time.Minute
	}
	return c.stateTimeout
}

// InstanceMaxLifetimeDuration is the prepared instance_max_lifetime.
func (c *Config) InstanceMaxLifetimeDuration() time.Duration { return c.instanceMaxLifetime }

// looksX86 recognises instance families that are certainly not arm64, so
// `packer validate` catches the common mistake before any AWS call; preflight
// checks every type's architecture with DescribeInstanceTypes anyway.
// Graviton families carry a 'g' after the generation digit (c7g, m6gd, t4g,
// im4gn, g5g); a1 is the first-generation exception.
func looksX86(t string) bool {
	family, _, _ := strings.Cut(t, ".")
	if family == "a1" {
		return false
	}
	gen := strings.IndexAny(family, "0123456789")
	if gen < 0 {
		return false // unknown naming: leave it to preflight
	}
	return !strings.Contains(family[gen+1:], "g")
}

// graviton suggests a Graviton sibling of an x86 type: m5.large -> m7g.large.
func graviton(t string) string {
	family, size, _ := strings.Cut(t, ".")
	letters := family
	if i := strings.IndexAny(family, "0123456789"); i >= 0 {
		letters = family[:i]
	}
	switch letters {
	case "c", "m", "r":
		return letters + "7g." + size
	case "t":
		return "t4g." + size
	}
	return "c7g.2xlarge"
}
