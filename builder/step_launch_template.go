package builder

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"gopkg.in/yaml.v3"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
)

// stepLaunchTemplate creates the temporary launch template the fleet
// launches from: the AMI, the root volume, the security group, IMDSv2, the
// instance's tags, and user data carrying the SSH key the lifetime cap and
// the instance's host key.
// Its Cleanup deletes the template.
type stepLaunchTemplate struct{}

func (s *stepLaunchTemplate) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	clockOf(state).enter(phaseLaunch)
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	data, err := launchTemplateData(ctx, e, state)
	if err != nil {
		return halt(state, err)
	}
	buildID := getString(state, stateBuildID)
	name := "packer-nixos-sd-" + buildID
	e.ui.Say("Creating temporary launch template " + name + "...")
	// The security group was created a moment ago: NotFound means not
	// visible yet.
	out, err := e.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		// The SDK's retry of a request whose answer was lost gets the
		// template the first one made, not InvalidLaunchTemplateName.AlreadyExists.
		ClientToken:        aws.String(buildID + "-lt"),
		LaunchTemplateName: aws.String(name),
		LaunchTemplateData: data,
		VersionDescription: aws.String("packer-nixos-sd build " + buildID),
		TagSpecifications:  []types.TagSpecification{tagSpec(types.ResourceTypeLaunchTemplate, resourceTags(e.cfg, state, nil))},
	}, awscommon.NotYetVisible(e.cfg.PollIntervalDuration(), awscommon.CodeGroupNotFound))
	if err != nil {
		return halt(state, fmt.Errorf("creating the launch template: %w", err))
	}
	if out.LaunchTemplate == nil || aws.ToString(out.LaunchTemplate.LaunchTemplateId) == "" {
		return halt(state, errors.New("creating the launch template: EC2 returned no launch template id; run the build again"))
	}
	state.Put(stateLaunchTemplate, aws.ToString(out.LaunchTemplate.LaunchTemplateId))
	return multistep.ActionContinue
}

func (s *stepLaunchTemplate) Cleanup(state multistep.StateBag) {
	clockOf(state).enter(phaseCleanup)
	cleanupResource(state, stateLaunchTemplate, "launch template", deleteLaunchTemplate)
}

// deleteLaunchTemplate deletes the template. The SDK retries NotFound (not
// visible yet); NotFound still after its tries means the template is gone (a
// delete whose answer was lost).
func deleteLaunchTemplate(ctx context.Context, e stepEnv, ltID string) error {
	_, err := e.ec2.DeleteLaunchTemplate(ctx, &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: aws.String(ltID)},
		awscommon.NotYetVisible(e.cfg.PollIntervalDuration(), awscommon.CodeLaunchTemplateNotFound))
	if strings.HasPrefix(awscommon.ErrorCode(err), "InvalidLaunchTemplateId.NotFound") {
		return nil
	}
	return err
}

// launchTemplateData is what every instance of the build is launched with.
func launchTemplateData(ctx context.Context, e stepEnv, state multistep.StateBag) (*types.RequestLaunchTemplateData, error) {
	cfg := e.cfg
	ami := getString(state, stateSourceAMI)
	if ami == "" {
		return nil, errors.New("internal error: no source AMI in the build state")
	}
	rootDevice, err := rootDeviceName(ctx, e, state, ami)
	if err != nil {
		return nil, err
	}
	host, _ := state.Get(stateHostKey).(*hostkey.Pair)
	userData, err := userData(host, getString(state, statePublicKey), cfg.InstanceMaxLifetimeDuration())
	if err != nil {
		return nil, err
	}
	runTags := resourceTags(cfg, state, cfg.RunTags)
	data := &types.RequestLaunchTemplateData{
		ImageId:  aws.String(ami),
		UserData: aws.String(userData),
		// A shutdown from inside (the lifetime cap, the watchdog) ends the
		// instance and its volume instead of leaving a stopped instance.
		InstanceInitiatedShutdownBehavior: types.ShutdownBehaviorTerminate,
		MetadataOptions: &types.LaunchTemplateInstanceMetadataOptionsRequest{
			HttpEndpoint:            types.LaunchTemplateInstanceMetadataEndpointStateEnabled,
			HttpTokens:              types.LaunchTemplateHttpTokensStateRequired,
			HttpPutResponseHopLimit: aws.Int32(1),
		},
		BlockDeviceMappings: []types.LaunchTemplateBlockDeviceMappingRequest{{
			DeviceName: aws.String(rootDevice),
			Ebs: &types.LaunchTemplateEbsBlockDeviceRequest{
				VolumeType:          types.VolumeTypeGp3,
				VolumeSize:          aws.Int32(cfg.VolumeSize),
				Encrypted:           aws.Bool(true),
				DeleteOnTermination: aws.Bool(true),
			},
		}},
		TagSpecifications: []types.LaunchTemplateTagSpecificationRequest{
			{ResourceType: types.ResourceTypeInstance, Tags: runTags},
			{ResourceType: types.ResourceTypeVolume, Tags: runTags},
		},
	}
	if cfg.VolumeKMSKeyID != "" {
		data.BlockDeviceMappings[0].Ebs.KmsKeyId = aws.String(cfg.VolumeKMSKeyID)
	}
	groupID := getString(state, stateSecurityGroupID)
	if cfg.SubnetID != "" {
		// A chosen subnet may not give public addresses by default: ask for
		// one on the primary interface, which then carries the subnet and the
		// group. The fleet's overrides then name no subnet: EC2 refuses an
		// instance-level subnet next to a network interface.
		ni := types.LaunchTemplateInstanceNetworkInterfaceSpecificationRequest{
			DeviceIndex:              aws.Int32(0),
			SubnetId:                 aws.String(cfg.SubnetID),
			AssociatePublicIpAddress: aws.Bool(wantsPublicAddress(cfg)),
			DeleteOnTermination:      aws.Bool(true),
		}
		if groupID != "" {
			ni.Groups = []string{groupID}
		}
		data.NetworkInterfaces = []types.LaunchTemplateInstanceNetworkInterfaceSpecificationRequest{ni}
	} else if groupID != "" {
		data.SecurityGroupIds = []string{groupID}
	}
	return data, nil
}

// rootDeviceName is the AMI's root device, as preflight or the Debian
// look-up found it, else as DescribeImages tells.
func rootDeviceName(ctx context.Context, e stepEnv, state multistep.StateBag, ami string) (string, error) {
	if root := getString(state, stateRootDevice); root != "" {
		return root, nil
	}
	out, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
	if err != nil {
		return "", fmt.Errorf("describing source AMI %s: %w", ami, err)
	}
	if len(out.Images) == 0 {
		return "", fmt.Errorf("source AMI %s does not exist in %s; set source_ami to an arm64 AMI of this region", ami, e.cfg.Region)
	}
	if root := aws.ToString(out.Images[0].RootDeviceName); root != "" {
		return root, nil
	}
	return "/dev/xvda", nil
}

// cloudConfig is the part of cloud-init's cloud-config the builder writes.
type cloudConfig struct {
	// SSHDeleteKeys removes the AMI's own host keys; SSHKeys installs the
	// pinned one and, being present, stops cloud-init generating others.
	SSHDeleteKeys     bool           `yaml:"ssh_deletekeys"`
	SSHGenKeyTypes    []string       `yaml:"ssh_genkeytypes"`
	SSHKeys           *cloudHostKeys `yaml:"ssh_keys,omitempty"`
	SSHAuthorizedKeys []string       `yaml:"ssh_authorized_keys,omitempty"`
	RunCmd            [][]string     `yaml:"runcmd"`
}

type cloudHostKeys struct {
	ED25519Private string `yaml:"ed25519_private"`
	ED25519Public  string `yaml:"ed25519_public"`
}

// userData is the base64 cloud-config: the instance's host key, the SSH key
// for the default user and a hard lifetime cap (the instance powers off, and
// so terminates, even when Packer was killed and could not clean up).
func userData(host *hostkey.Pair, publicKey string, lifetime time.Duration) (string, error) {
	if host == nil {
		return "", errors.New("internal error: no host key for the user data")
	}
	minutes := max(int(math.Ceil(lifetime.Minutes())), 1)
	cc := cloudConfig{
		SSHDeleteKeys:  true,
		SSHGenKeyTypes: []string{},
		SSHKeys: &cloudHostKeys{
			ED25519Private: string(host.PrivatePEM),
			ED25519Public:  hostkey.AuthorizedLine(host.Public),
		},
		RunCmd: [][]string{{"shutdown", "-P", fmt.Sprintf("+%d", minutes), "packer-nixos-sd: instance_max_lifetime reached"}},
	}
	if publicKey != "" {
		cc.SSHAuthorizedKeys = []string{publicKey}
	}
	var b bytes.Buffer
	b.WriteString("#cloud-config\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&cc); err != nil {
		return "", fmt.Errorf("writing the user data: %w", err)
	}
	if err := enc.Close(); err != nil {
		return "", fmt.Errorf("writing the user data: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b.Bytes()), nil
}
