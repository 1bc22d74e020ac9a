//go:generate go tool packer-sdc struct-markdown
//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config,DatasourceOutput

// Package datasource is the nixos-sd-debian-ami data source: the newest
// official Debian AMI for a release and an architecture.
package datasource

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/hcl2helper"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/zclconf/go-cty/cty"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/debianami"
)

// Config is the data source's configuration.
type Config struct {
	awscommon.AccessConfig `mapstructure:",squash"`
	// The Debian release: a codename or a number, such as `bookworm`/`12` or
	// `trixie`/`13`. Defaults to the newest stable release the plugin knows
	// (`trixie`).
	Release string `mapstructure:"release" required:"false"`
	// The architecture: `arm64` (the default) or `amd64`.
	Architecture string `mapstructure:"architecture" required:"false"`
	// Consider images whose deprecation time has passed. Defaults to false.
	IncludeDeprecated bool `mapstructure:"include_deprecated" required:"false"`
	// The accounts whose images to consider: 12-digit account ids, or `self`,
	// `amazon`, `aws-marketplace`. Defaults to Debian's official account,
	// `["136693071363"]`, in the `aws` partition; in the China (`cn-*`) and
	// GovCloud (`us-gov-*`) regions, where the plugin knows no Debian
	// account, it is required.
	Owners []string `mapstructure:"owners" required:"false"`
	// Extra DescribeImages filters, name to value, for example
	// `{ "virtualization-type" = "hvm" }`. They narrow the search; the release,
	// architecture and owner filters always apply.
	Filters map[string]string `mapstructure:"filters" required:"false"`

	release debianami.Release
	arch    string
}

// DatasourceOutput is what the data source returns.
type DatasourceOutput struct {
	// The AMI id, for example `ami-0123456789abcdef0`.
	ID string `mapstructure:"id"`
	// The AMI name, for example `debian-13-arm64-20251117-2299`.
	Name string `mapstructure:"name"`
	// When the AMI was created (RFC 3339).
	CreationDate string `mapstructure:"creation_date"`
	// The AMI description.
	Description string `mapstructure:"description"`
	// The EC2 architecture: `arm64` or `x86_64`.
	Architecture string `mapstructure:"architecture"`
	// The owning account.
	Owner string `mapstructure:"owner"`
	// The Debian release codename, for example `trixie`.
	Release string `mapstructure:"release"`
	// The root device name, for example `/dev/xvda`.
	RootDeviceName string `mapstructure:"root_device_name"`
	// The boot mode when EC2 reports one (`uefi`, `legacy-bios`, `uefi-preferred`).
	BootMode string `mapstructure:"boot_mode"`
	// When the AMI is or was deprecated (RFC 3339), empty when it is not.
	DeprecationTime string `mapstructure:"deprecation_time"`
}

// Datasource is the nixos-sd-debian-ami data source.
type Datasource struct {
	config Config
}

// ConfigSpec returns the HCL2 spec of the configuration.
func (d *Datasource) ConfigSpec() hcldec.ObjectSpec { return d.config.FlatMapstructure().HCL2Spec() }

// OutputSpec returns the HCL2 spec of the output.
func (d *Datasource) OutputSpec() hcldec.ObjectSpec {
	return (&DatasourceOutput{}).FlatMapstructure().HCL2Spec()
}

// Configure decodes and validates the configuration.
func (d *Datasource) Configure(raws ...interface{}) error {
	if err := config.Decode(&d.config, nil, raws...); err != nil {
		return err
	}
	var errs *packersdk.MultiError
	errs = packersdk.MultiErrorAppend(errs, d.config.AccessConfig.Prepare()...)
	var err error
	if d.config.release, err = debianami.ParseRelease(d.config.Release); err != nil {
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("release: %w", err))
	}
	if d.config.arch, err = debianami.ParseArchitecture(d.config.Architecture); err != nil {
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("architecture: %w", err))
	}
	if len(d.config.Owners) == 0 {
		part := awscommon.Partition(d.config.Region)
		if owner, ok := debianami.OwnerIn(part); ok {
			d.config.Owners = []string{owner}
		} else if d.config.Region != "" {
			errs = packersdk.MultiErrorAppend(errs, debianami.NoOwnerError("owners", d.config.Region, part))
		}
	} else if err := debianami.ValidateOwners(d.config.Owners); err != nil {
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("owners: %w", err))
	}
	for name := range d.config.Filters {
		if strings.TrimSpace(name) == "" {
			errs = packersdk.MultiErrorAppend(errs, fmt.Errorf("filters: a filter name is empty; use DescribeImages filter names such as \"virtualization-type\""))
		}
	}
	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	return nil
}

// lookupTimeout bounds one Execute: Packer gives data sources no context.
const lookupTimeout = 5 * time.Minute

// Execute looks the image up.
func (d *Datasource) Execute() (cty.Value, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	null := cty.NullVal(hcldec.ImpliedType(d.OutputSpec()))
	client, err := d.config.AccessConfig.NewEC2Client(ctx)
	if err != nil {
		return null, fmt.Errorf("nixos-sd-debian-ami: %w", err)
	}
	img, err := debianami.Lookup(ctx, client, d.query())
	if err != nil {
		return null, fmt.Errorf("nixos-sd-debian-ami: %w", err)
	}
	return hcl2helper.HCL2ValueFromConfig(output(img), d.OutputSpec()), nil
}

func (d *Datasource) query() debianami.Query {
	return debianami.Query{
		Release:           d.config.release,
		Architecture:      d.config.arch,
		Owners:            d.config.Owners,
		Filters:           d.config.Filters,
		IncludeDeprecated: d.config.IncludeDeprecated,
		Region:            d.config.Region,
	}
}

func output(img *debianami.Image) DatasourceOutput {
	out := DatasourceOutput{
		ID:             img.ID,
		Name:           img.Name,
		Description:    img.Description,
		Architecture:   img.Architecture,
		Owner:          img.Owner,
		Release:        img.Release.Codename,
		RootDeviceName: img.RootDeviceName,
		BootMode:       img.BootMode,
	}
	if !img.CreationDate.IsZero() {
		out.CreationDate = img.CreationDate.UTC().Format(time.RFC3339)
	}
	if img.DeprecationTime != nil {
		out.DeprecationTime = img.DeprecationTime.UTC().Format(time.RFC3339)
	}
	return out
}
