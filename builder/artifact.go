package builder

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"
)

// HCPProvider is the provider name HCP Packer records the image under.
const HCPProvider = "nixos-sd"

// Artifact is the downloaded, verified SD image with its checksum and
// manifest files.
type Artifact struct {
	// ImagePath is the local image file.
	ImagePath string
	// SHA256 is the image's hex SHA-256.
	SHA256 string
	// Paths are every file the build wrote: the image, <image>.sha256 and
	// <image>.json.
	Paths []string
	// Generated is the build's generated data (the build.<Key> values).
	Generated map[string]interface{}
	// Region is the AWS region the image was built in.
	Region string
	// SourceAMI is the AMI of the build instance.
	SourceAMI string
	// Configuration names what was built: the flake reference, the
	// nixos_config path's base name, or "built-in".
	Configuration string
}

// BuilderId identifies the nixos-sd builder.
func (a *Artifact) BuilderId() string { return BuilderID }

// Files are the image, its .sha256 and its manifest.
func (a *Artifact) Files() []string { return append([]string(nil), a.Paths...) }

// Id is the image path.
func (a *Artifact) Id() string { return a.ImagePath }

func (a *Artifact) String() string {
	return fmt.Sprintf("NixOS SD image: %s (sha256 %s)", a.ImagePath, a.SHA256)
}

// State answers "generated_data" with the build's generated data and
// registryimage.ArtifactStateURI with the image as HCP Packer records it.
func (a *Artifact) State(name string) interface{} {
	switch name {
	case "generated_data":
		return a.Generated
	case registryimage.ArtifactStateURI:
		img, err := a.hcpImage()
		if err != nil {
			log.Printf("[WARN] nixos-sd: no HCP Packer metadata: %v", err)
			return nil
		}
		return []*registryimage.Image{img}
	}
	return nil
}

// hcpImage is the image for HCP Packer: its id is the image's SHA-256 (the
// local path means nothing elsewhere), its labels say how it was built.
func (a *Artifact) hcpImage() (*registryimage.Image, error) {
	labels := map[string]interface{}{
		"image_file":    filepath.Base(a.ImagePath),
		"configuration": a.Configuration,
	}
	for label, key := range map[string]string{
		"nixpkgs_revision": "NixpkgsRevision",
		"instance_type":    "InstanceType",
	} {
		if v, ok := a.Generated[key].(string); ok && v != "" {
			labels[label] = v
		}
	}
	img, err := registryimage.FromArtifact(a,
		registryimage.WithID(a.SHA256),
		registryimage.WithProvider(HCPProvider),
		registryimage.WithRegion(a.Region),
		registryimage.WithSourceID(a.SourceAMI),
		registryimage.SetLabels(labels),
	)
	if err != nil {
		return nil, err
	}
	return img, img.Validate()
}

// Destroy removes the artifact's files.
func (a *Artifact) Destroy() error {
	var errs []error
	for _, f := range a.Paths {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
