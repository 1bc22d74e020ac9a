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
	return errors.New("nixos-sd provisioner: the remote build is not implemented yet")
}
