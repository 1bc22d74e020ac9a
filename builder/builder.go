// Package builder is the nixos-sd builder: it rents a native AArch64 EC2 spot
// instance, builds a NixOS SD image there, brings the verified image home and
// leaves nothing running.
package builder

import (
	"context"
	"errors"

	"github.com/hashicorp/hcl/v2/hcldec"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// BuilderID identifies this builder's artifacts. It must never change.
const BuilderID = "nixos-sd.builder"

// Builder is the nixos-sd builder.
type Builder struct {
	config Config
}

// ConfigSpec returns the HCL2 spec of the builder's configuration.
func (b *Builder) ConfigSpec() hcldec.ObjectSpec { return b.config.FlatMapstructure().HCL2Spec() }

// Prepare decodes and validates the configuration.
func (b *Builder) Prepare(raws ...interface{}) ([]string, []string, error) {
	warnings, err := b.config.Prepare(raws...)
	if err != nil {
		return nil, warnings, err
	}
	return GeneratedDataKeys, warnings, nil
}

// GeneratedDataKeys are the build variables the builder sets (build.<Key>).
var GeneratedDataKeys = []string{"InstanceType", "AvailabilityZone", "SourceAMI", "SpotPrice", "InstanceID", "ImagePath", "ImageSHA256"}

// Run runs the build pipeline.
func (b *Builder) Run(ctx context.Context, ui packersdk.Ui, hook packersdk.Hook) (packersdk.Artifact, error) {
	return nil, errors.New("nixos-sd builder: the build pipeline is not implemented yet")
}
