//go:generate go tool packer-sdc struct-markdown
//go:generate go tool packer-sdc mapstructure-to-hcl2 -type AccessConfig,AssumeRoleConfig

// Package awscommon holds what the builder and the data source share to reach
// EC2: the access options, the client they build, and the narrow EC2 interface
// the rest of the plugin is written against.
package awscommon

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// AssumeRoleConfig lets the plugin act as another IAM role.
type AssumeRoleConfig struct {
	// The ARN of the role to assume, for example
	// `arn:aws:iam::123456789012:role/packer-nixos-sd`.
	RoleARN string `mapstructure:"role_arn" required:"true"`
	// The session name recorded in CloudTrail. Defaults to `packer-nixos-sd`.
	SessionName string `mapstructure:"session_name" required:"false"`
	// The external id the role's trust policy asks for, if any.
	ExternalID string `mapstructure:"external_id" required:"false"`
	// How long the assumed credentials last, for example `1h`. Defaults to `1h`;
	// AWS accepts 15m to 12h.
	Duration string `mapstructure:"duration" required:"false"`
}

// AccessConfig is how the plugin reaches EC2. Credentials follow the AWS SDK's
// usual chain (environment, shared files, SSO, instance role) unless given here.
type AccessConfig struct {
	// The AWS region to work in, for example `us-east-2`. Defaults to the AWS
	// SDK's own setting, as the AWS CLI finds it: the `AWS_REGION` or
	// `AWS_DEFAULT_REGION` environment variable, else the `region` of the
	// profile (`profile`, `AWS_PROFILE`, or `default`) in `~/.aws/config`.
	// Validation fails when none of these gives one.
	Region string `mapstructure:"region" required:"false"`
	// The named profile from the shared AWS config and credentials files.
	Profile string `mapstructure:"profile" required:"false"`
	// A static access key id. Prefer the environment or a profile; when set,
	// `secret_key` is required too.
	AccessKey string `mapstructure:"access_key" required:"false"`
	// The static secret access key that goes with `access_key`.
	SecretKey string `mapstructure:"secret_key" required:"false"`
	// A session token for temporary static credentials.
	Token string `mapstructure:"token" required:"false"`
	// Assume this IAM role with the credentials found above.
	AssumeRole AssumeRoleConfig `mapstructure:"assume_role" required:"false"`
	// Send EC2 API calls to this URL instead of the region's public endpoint,
	// for example a VPC interface endpoint or a local EC2 emulator. The
	// environment variable `AWS_ENDPOINT_URL_EC2` is honoured too; this option
	// wins when both are set.
	EC2Endpoint string `mapstructure:"ec2_endpoint" required:"false"`
	// How many times the AWS SDK tries a call that failed with a retryable error
	// (throttling, 5xx). Defaults to 10.
	MaxRetries int `mapstructure:"max_retries" required:"false"`

	assumeRoleDuration time.Duration
	regionSource       string
}

var regionPattern = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

// Prepare fills in defaults and validates the options. It makes no AWS call.
func (c *AccessConfig) Prepare() []error {
	var errs []error
	if c.Region == "" {
		region, source, err := sdkRegion(c.Profile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("region: not set, and the AWS SDK's configuration could not be read (%v); set region = \"us-east-2\" in the source, or fix the profile", err))
		case region == "":
			errs = append(errs, fmt.Errorf("region: required, and the AWS SDK's configuration gives none (no AWS_REGION or AWS_DEFAULT_REGION, no region in the profile's section of ~/.aws/config); set it to the AWS region to build in, for example region = \"us-east-2\" in the source, or export AWS_REGION=us-east-2"))
		default:
			c.Region, c.regionSource = region, source
		}
	}
	if c.Region != "" && !regionPattern.MatchString(c.Region) {
		errs = append(errs, fmt.Errorf("region: %q is not an AWS region name; use a name such as \"us-east-2\" or \"eu-west-1\", not an availability zone or a display name", c.Region))
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		errs = append(errs, fmt.Errorf("access_key and secret_key: set both or neither (neither uses the AWS SDK's credential chain)"))
	}
	if c.Token != "" && c.AccessKey == "" {
		errs = append(errs, fmt.Errorf("token: only meaningful with access_key and secret_key; set those too or remove token"))
	}
	if c.EC2Endpoint != "" {
		u, err := url.Parse(c.EC2Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("ec2_endpoint: %q is not an http(s) URL; use a URL such as \"https://ec2.us-east-2.amazonaws.com\"", c.EC2Endpoint))
		}
	}
	if c.MaxRetries < 0 {
		errs = append(errs, fmt.Errorf("max_retries: must be 0 or more, got %d; use 0 for the default of 10", c.MaxRetries))
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 10
	}
	var err error
	if c.AssumeRole.RoleARN == "" && (c.AssumeRole.SessionName != "" || c.AssumeRole.ExternalID != "" || c.AssumeRole.Duration != "") {
		errs = append(errs, fmt.Errorf("assume_role.role_arn: required when assume_role is given; set it to the role's ARN or remove assume_role"))
	}
	if c.AssumeRole.SessionName == "" {
		c.AssumeRole.SessionName = "packer-nixos-sd"
	}
	if c.assumeRoleDuration, err = ParseDuration("assume_role.duration", c.AssumeRole.Duration, time.Hour); err != nil {
		errs = append(errs, err)
	} else if c.assumeRoleDuration < 15*time.Minute || c.assumeRoleDuration > 12*time.Hour {
		errs = append(errs, fmt.Errorf("assume_role.duration: %s is outside what AWS accepts; use 15m to 12h", c.assumeRoleDuration))
	}
	return errs
}

// AssumeRoleDuration is the prepared assume_role.duration.
func (c *AccessConfig) AssumeRoleDuration() time.Duration { return c.assumeRoleDuration }

// RegionSource says where the region came from when the configuration did
// not set it ("AWS_REGION", "profile default in the AWS config file"); empty
// when it did.
func (c *AccessConfig) RegionSource() string { return c.regionSource }

// sdkRegion is the region the AWS SDK would use without one given: the
// environment, then the profile's region in the shared config file.
func sdkRegion(profile string) (region, source string, err error) {
	for _, v := range []string{"AWS_REGION", "AWS_DEFAULT_REGION"} {
		if r := os.Getenv(v); r != "" {
			return r, v, nil
		}
	}
	var opts []func(*awsconfig.LoadOptions) error
	if profile != "" {
		opts = append(opts, awsconfig.WithSharedConfigProfile(profile))
	}
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), opts...)
	if err != nil {
		return "", "", err
	}
	name := cmp.Or(profile, os.Getenv("AWS_PROFILE"), "default")
	return cfg.Region, "profile " + name + " in the AWS config file", nil
}

// ParseDuration parses a positive duration option; empty means def.
func ParseDuration(option, value string, def time.Duration) (time.Duration, error) {
	if value == "" {
		return def, nil
	}
	d, err := time.ParseDuration(value)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive duration; use a value such as \"30s\", \"5m\" or \"1h\"", option, value)
	}
	return d, nil
}

// AWSConfig loads the AWS SDK configuration these options describe.
func (c *AccessConfig) AWSConfig(ctx context.Context) (aws.Config, error) {
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(c.Region),
		awsconfig.WithRetryMaxAttempts(max(c.MaxRetries, 1)),
	}
	if c.Profile != "" {
		opts = append(opts, awsconfig.WithSharedConfigProfile(c.Profile))
	}
	if c.AccessKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, c.Token)))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading AWS configuration (profile %q): %w", c.Profile, err)
	}
	if c.AssumeRole.RoleARN != "" {
		provider := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), c.AssumeRole.RoleARN,
			func(o *stscreds.AssumeRoleOptions) {
				o.RoleSessionName = c.AssumeRole.SessionName
				if c.AssumeRole.ExternalID != "" {
					o.ExternalID = aws.String(c.AssumeRole.ExternalID)
				}
				if c.assumeRoleDuration > 0 {
					o.Duration = c.assumeRoleDuration
				}
			})
		cfg.Credentials = aws.NewCredentialsCache(provider)
	}
	return cfg, nil
}

// NewEC2Client builds the EC2 client for these options.
func (c *AccessConfig) NewEC2Client(ctx context.Context) (*ec2.Client, error) {
	cfg, err := c.AWSConfig(ctx)
	if err != nil {
		return nil, err
	}
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if c.EC2Endpoint != "" {
			o.BaseEndpoint = aws.String(c.EC2Endpoint)
		}
	}), nil
}
