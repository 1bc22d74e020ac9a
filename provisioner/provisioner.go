//go:generate go tool packer-sdc struct-markdown
//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config

// Package provisioner is the nixos-sd provisioner: it builds a NixOS SD image
// on whatever host another builder connected to, and brings it home verified.
package provisioner

import (
	"context"
	"errors"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
)

// Config is the nixos-sd provisioner's configuration.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`
	payload.Config      `mapstructure:",squash"`

	ctx interpolate.Context
}

// Provisioner is the nixos-sd provisioner.
type Provisioner struct {
	config Config
}

// ConfigSpec returns the HCL2 spec of the provisioner's configuration.
func (p *Provisioner) ConfigSpec() hcldec.ObjectSpec { return p.config.FlatMapstructure().HCL2Spec() }

// Prepare decodes and validates the configuration.
func (p *Provisioner) Prepare(raws ...interface{}) error {
	err := config.Decode(&p.config, &config.DecodeOpts{
		PluginType:         "nixos-sd.provisioner",
		Interpolate:        true,
		InterpolateContext: &p.config.ctx,
	}, raws...)
	if err != nil {
		return err
	}
	var errs *packersdk.MultiError
	errs = packersdk.MultiErrorAppend(errs, p.config.Config.Prepare(p.config.PackerBuildName, p.config.PackerForce)...)
	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	return nil
}

// Provision builds the image on the connected host and downloads it.
func (p *Provisioner) Provision(ctx context.Context, ui packersdk.Ui, comm packersdk.Communicator, generatedData map[string]interface{}) error {
	if comm == nil {
		return errors.New("nixos-sd provisioner: the build has no communicator; give the source an SSH communicator (for the null builder: communicator = \"ssh\" with ssh_host and ssh_username)")
	}
	res, err := payload.Run(ctx, ui, comm, &p.config.Config, payload.RunOptions{
		ManifestExtra: map[string]string{"packer_build_name": p.config.PackerBuildName, "component": "provisioner"},
		SSH:           downloadTarget(generatedData),
	})
	if err != nil {
		return err
	}
	ui.Say("nixos-sd wrote:")
	for _, f := range res.Files {
		ui.Say("  " + f)
	}
	return nil
}
